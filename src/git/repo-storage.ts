import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { closeSync, existsSync, fsync, fsyncSync, openSync, readdirSync, readFileSync, statSync, unlinkSync, type Stats } from 'node:fs';
import { mkdir, readdir, rename, rm, appendFile, stat, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';
import { replicaChecksum, type RefEntry } from '../domain/checksum.js';
import type { GitRunner } from './runner.js';
import { packIndexHolds } from './pack-index.js';
import { BULK_REF_UPDATES } from './update-ref.js';

const execFileAsync = promisify(execFile);

/** REPLICA_CONFIG is the git config every replica gets (DESIGN §5). */
const REPLICA_CONFIG = `[core]
\tfsync = committed
\tfsyncMethod = fsync
\twarnAmbiguousRefs = false
[receive]
\tfsckObjects = true
\tunpackLimit = 1
\tprocReceiveRefs = refs/
\tadvertisePushOptions = true
\tdenyNonFastForwards = false
[transfer]
\tfsckObjects = true
[gc]
\tauto = 0
[uploadpack]
\tallowFilter = true
\tallowAnySHA1InWant = false
`;

/** DEFAULT_BRANCH is HEAD's target in a new repo. */
export const DEFAULT_HEAD = 'refs/heads/main';

/**
 * ReplicaStorage owns the bare repos under `<dataDir>/repos`, their temporary and trash areas,
 * and reads their refs through the git runner.
 */
export class ReplicaStorage {
  /**
   * replaced counts the replica directories installed or removed on this node (any repo): what
   * was checked in a replica before it changed may no longer hold (Participant's copy checks).
   */
  replaced = 0;
  readonly reposDir: string;
  readonly tmpDir: string;
  readonly trashDir: string;

  constructor(
    readonly dataDir: string,
    private readonly git: GitRunner,
  ) {
    this.reposDir = join(dataDir, 'repos');
    this.tmpDir = join(dataDir, 'tmp');
    this.trashDir = join(dataDir, 'trash');
  }

  /** init creates the directories the storage needs and empties the trash. */
  async init(): Promise<void> {
    await mkdir(this.reposDir, { recursive: true });
    await mkdir(this.tmpDir, { recursive: true });
    await rm(this.trashDir, { recursive: true, force: true });
    await mkdir(this.trashDir, { recursive: true });
  }

  /** repoPath is where a repo's replica lives: `<dataDir>/repos/<owner>/<name>.git`. */
  repoPath(repoId: string): string {
    return join(this.reposDir, `${repoId}.git`);
  }

  /** stagingPath is where a create transaction prepares a repo before commit renames it. */
  stagingPath(txnId: string): string {
    return join(this.tmpDir, `create-${txnId}.git`);
  }

  /** exists says whether a replica directory is present. */
  async exists(repoId: string): Promise<boolean> {
    return isDir(this.repoPath(repoId));
  }

  /**
   * initRepo makes a bare repo at `path` with the replica config and its incarnation id. No
   * template: git's sample hooks, `description` and `info/exclude` are of no use to a replica
   * (its hooks are core.hooksPath's) and made an empty repo 27 inodes and 116 KB instead of 9 and 36 KB.
   */
  async initRepo(path: string, incarnation: string): Promise<void> {
    await rm(path, { recursive: true, force: true });
    await mkdir(dirname(path), { recursive: true });
    await this.git.run(['init', '--quiet', '--bare', '--template=', `--initial-branch=${DEFAULT_HEAD.slice('refs/heads/'.length)}`, path], {
      cwd: this.dataDir,
    });
    await appendReplicaConfig(path, incarnation);
    // Made with its repository: it holds every LFS object there is of it (none).
    await writeLfsComplete(path);
    await fsyncPath(path);
  }

  /**
   * adoptClone turns a `git clone --mirror` at `path` into a replica: the clone's remote is
   * removed, the replica config and incarnation id added, and the new files fsynced.
   */
  async adoptClone(path: string, incarnation: string): Promise<void> {
    await this.git.run(['config', '--remove-section', 'remote.origin'], { cwd: path, okCodes: [0, 128] });
    await appendReplicaConfig(path, incarnation);
    for (const p of [join(path, 'HEAD'), join(path, 'objects', 'pack'), join(path, 'objects'), join(path, 'refs'), path])
      await fsyncPath(p);
  }

  /** incarnationOf reads the incarnation id a replica was created with, or null. */
  async incarnationOf(repoId: string): Promise<string | null> {
    return readIncarnation(this.repoPath(repoId));
  }

  /**
   * install moves a prepared repo into place; an old directory there (a deleted or older
   * incarnation) is moved to the trash first. The parent directory is fsynced so the rename is durable.
   */
  async install(stagedPath: string, repoId: string): Promise<void> {
    this.replaced++;
    const target = this.repoPath(repoId);
    await mkdir(dirname(target), { recursive: true });
    const before = await readIncarnation(target);
    if (await isDir(target)) await this.moveToTrash(target);
    await rename(stagedPath, target);
    await fsyncPath(dirname(target));
    if (before !== null && before !== (await readIncarnation(target))) await this.gone(before);
  }

  /** remove moves a replica to the trash and deletes it there. */
  async remove(repoId: string): Promise<void> {
    this.replaced++;
    const target = this.repoPath(repoId);
    if (await isDir(target)) {
      const incarnation = await readIncarnation(target);
      const trashed = await this.moveToTrash(target);
      await fsyncPath(dirname(target));
      await rm(trashed, { recursive: true, force: true });
      if (incarnation !== null) await this.gone(incarnation);
    }
  }

  /**
   * onGone is told of an incarnation whose replica left this node (deleted, dropped, or replaced
   * by another incarnation's): what is kept beside the replica (its LFS objects) goes too.
   */
  onGone: ((incarnation: string) => Promise<void>) | null = null;

  private async gone(incarnation: string): Promise<void> {
    await this.onGone?.(incarnation).catch(() => undefined);
  }

  private async moveToTrash(path: string): Promise<string> {
    const dest = join(this.trashDir, randomUUID());
    await rename(path, dest);
    return dest;
  }

  /** listLocal walks the repos directory and returns the repo ids found on disk. */
  async listLocal(): Promise<string[]> {
    const out: string[] = [];
    let owners: string[];
    try {
      owners = await readdir(this.reposDir);
    } catch {
      return out;
    }
    for (const owner of owners) {
      let names: string[];
      try {
        names = await readdir(join(this.reposDir, owner));
      } catch {
        continue;
      }
      for (const n of names) if (n.endsWith('.git')) out.push(`${owner}/${n.slice(0, -4)}`);
    }
    return out.sort();
  }

  /** readRefs lists every ref of a replica with its oid. */
  async readRefs(repoId: string): Promise<RefEntry[]> {
    return readRefsAt(this.git, this.repoPath(repoId));
  }

  /** headTarget reads HEAD's symbolic target, or null if HEAD is detached or missing. */
  async headTarget(repoId: string): Promise<string | null> {
    return readHeadTarget(this.repoPath(repoId));
  }

  /** setHead points HEAD at `ref` (a branch that may not exist yet), durably. */
  async setHead(repoId: string, ref: string): Promise<void> {
    const path = this.repoPath(repoId);
    await this.git.run(['symbolic-ref', 'HEAD', ref], { cwd: path });
    await fsyncPath(join(path, 'HEAD'));
    await fsyncPath(path);
  }

  /** checksum computes a replica's checksum from its refs on disk. */
  async checksum(repoId: string): Promise<string> {
    const [refs, head] = await Promise.all([this.readRefs(repoId), this.headTarget(repoId)]);
    return replicaChecksum(refs, head);
  }
}

/**
 * LINKS_CHECKED names the file in a replica directory that says every object in it came in
 * through a check of its links (Participant.checkCopy relies on it). A replica gets it when it is
 * made (an empty repo, a repair's clone), or, made by a build before the mark, once the verifier
 * found every link present (markLinksChecked). It loses it for good (LINKS_UNCHECKED) when a
 * push from a shallow clone names a shallow commit the replica does not have (noteShallow):
 * receive-pack then takes that commit without its parents.
 */
export const LINKS_CHECKED = 'gitrep-links-checked';

/** LINKS_UNCHECKED names the file that says a replica may hold an object whose links are missing; it outranks LINKS_CHECKED. */
export const LINKS_UNCHECKED = 'gitrep-links-unchecked';

/**
 * LFS_COMPLETE names the file in a replica directory that says the replica holds every Git LFS
 * object acknowledged for its incarnation (or missed one only as a member of the set that
 * acknowledged it, which the listing's quorum rule allows for): a replica made with its
 * repository has it; one made later by repair (a whole copy) gets it once its first full LFS
 * sync found every other live replica's objects (LfsSync). A listing counts only such replicas'
 * answers towards being complete.
 */
export const LFS_COMPLETE = 'gitrep-lfs-complete';

/** lfsComplete says whether a replica directory has LFS_COMPLETE. */
export function lfsComplete(path: string): boolean {
  return existsSync(join(path, LFS_COMPLETE));
}

/** markLfsComplete writes LFS_COMPLETE into a replica directory, durably. */
export async function markLfsComplete(path: string): Promise<void> {
  await writeLfsComplete(path);
  await fsyncPath(path);
}

/** writeLfsComplete writes LFS_COMPLETE and fsyncs it (the caller fsyncs the directory). */
async function writeLfsComplete(path: string): Promise<void> {
  await writeFile(join(path, LFS_COMPLETE), 'this replica holds every LFS object acknowledged for its incarnation\n');
  await fsyncPath(join(path, LFS_COMPLETE));
}

/** appendReplicaConfig adds the replica config and the incarnation id to a repo's config file, and LINKS_CHECKED, durably (the caller fsyncs the directory). */
async function appendReplicaConfig(path: string, incarnation: string): Promise<void> {
  await appendFile(join(path, 'config'), `${REPLICA_CONFIG}[replication]\n\tincarnation = ${incarnation}\n`);
  await fsyncPath(join(path, 'config'));
  await writeLinksChecked(path);
}

/** writeLinksChecked writes LINKS_CHECKED into the replica at `path` and fsyncs it (not the directory). */
async function writeLinksChecked(path: string): Promise<void> {
  await writeFile(join(path, LINKS_CHECKED), 'every object in this replica had its links checked\n');
  await fsyncPath(join(path, LINKS_CHECKED));
}

/**
 * LinksState is what a replica's files say of its objects' links: `checked` (LINKS_CHECKED, and
 * no LINKS_UNCHECKED, which outranks it), `unchecked` (LINKS_UNCHECKED), or `unknown` (neither:
 * made by a build before the mark, not looked at since).
 */
export type LinksState = 'checked' | 'unchecked' | 'unknown';

/** linksState reads a replica's LinksState (two stats in place). */
export function linksState(path: string): LinksState {
  if (existsSync(join(path, LINKS_UNCHECKED))) return 'unchecked';
  return existsSync(join(path, LINKS_CHECKED)) ? 'checked' : 'unknown';
}

/**
 * markLinksChecked gives the replica at `path` LINKS_CHECKED, durably. A LINKS_UNCHECKED written
 * meanwhile (it is written in place, before any await of the caller's could see it) still
 * outranks it.
 */
export async function markLinksChecked(path: string): Promise<void> {
  await writeLinksChecked(path);
  await fsyncPath(path);
}

/**
 * noteShallow is told of each `shallow <oid>` line of a push before receive-pack reads it (null:
 * a line that could not be read). receive-pack runs index-pack with those commits as shallow,
 * checking none of their parents, and moves the pack in if any of the push's commands is taken,
 * so a shallow commit the replica does not have yet may stay in it without its parents (an
 * outsider's review showed the steps). Then the replica gets LINKS_UNCHECKED and loses
 * LINKS_CHECKED, durably, before receive-pack can see the line: its copies' tips are walked by
 * rev-list from then on. A shallow commit the replica has already (a shallow clone of this
 * server) changes nothing.
 */
export function noteShallow(path: string, oid: string | null): void {
  if (oid !== null && linksState(path) !== 'unchecked' && objectPresent(path, oid)) return;
  dropLinksChecked(path);
}

/**
 * dropLinksChecked writes LINKS_UNCHECKED into the replica at `path` and takes LINKS_CHECKED
 * away, durably, before the caller goes on; only a whole new directory (a repair's copy) is
 * marked again.
 */
export function dropLinksChecked(path: string): void {
  const unchecked = join(path, LINKS_UNCHECKED);
  if (!existsSync(unchecked)) fsyncInPlace(unchecked, 'w');
  try {
    unlinkSync(join(path, LINKS_CHECKED));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  // Gone already, the directory is fsynced all the same: the removal by an earlier push whose
  // fsync failed may not be on disk yet.
  fsyncInPlace(path, 'r');
}

/** fsyncInPlace opens `path` (`w` creates it, empty) and fsyncs it on this thread: for the few writes that must be on disk before the caller's next step. */
function fsyncInPlace(path: string, flags: 'r' | 'w'): void {
  const fd = openSync(path, flags);
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** objectPresent says whether the replica at `path` has object `oid`, loose or in one of its packs (read in place). */
export function objectPresent(path: string, oid: string): boolean {
  if (!/^(?:[0-9a-f]{40}|[0-9a-f]{64})$/.test(oid)) return false;
  if (statOrNull(join(path, 'objects', oid.slice(0, 2), oid.slice(2)))?.isFile()) return true;
  const packDir = join(path, 'objects', 'pack');
  return listDir(packDir).some((f) => f.endsWith('.idx') && packIndexHolds(join(packDir, f), [oid]));
}

/** readRefsAt lists the refs of the repo at `path`. */
export async function readRefsAt(git: GitRunner, path: string): Promise<RefEntry[]> {
  const { stdout } = await git.run(['for-each-ref', '--format=%(objectname) %(refname)'], { cwd: path });
  const refs: RefEntry[] = [];
  for (const line of stdout.split('\n')) {
    if (!line) continue;
    const sp = line.indexOf(' ');
    refs.push({ oid: line.slice(0, sp), name: line.slice(sp + 1) });
  }
  return refs;
}

/**
 * readSmallFile, listDir and statOrNull look at a replica's files in place: a HEAD, a config, a
 * `.keep`, the pack directory, a few dozen bytes or names in the page cache, read several times
 * per push on each node, where the promise API's open, fstat, read and close (four thread-pool
 * round trips) cost about 0.1 ms of CPU each time. Null (or no names) when the path is not there.
 */
export function readSmallFile(path: string): string | null {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return null;
  }
}

export function listDir(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}

export function statOrNull(path: string): Stats | null {
  try {
    return statSync(path);
  } catch {
    return null;
  }
}

/** readHeadTarget reads a bare repo's HEAD file. */
export async function readHeadTarget(path: string): Promise<string | null> {
  const head = readSmallFile(join(path, 'HEAD'))?.trim();
  return head?.startsWith('ref: ') ? head.slice(5) : null;
}

/** readIncarnation reads `replication.incarnation` from a repo's config file. */
export async function readIncarnation(path: string): Promise<string | null> {
  const config = readSmallFile(join(path, 'config'));
  if (config === null) return null;
  return /\[replication\][^[]*?incarnation\s*=\s*([0-9a-zA-Z-]+)/.exec(config)?.[1] ?? null;
}

const fsyncFd = promisify(fsync);

/**
 * fsyncPath fsyncs a file or directory, so a rename into it survives a crash (git does not).
 * Only the fsync, which waits for the disk, leaves the event loop: opening and closing are
 * quick, and done in place they spare two thread-pool round trips on every commit.
 */
export async function fsyncPath(path: string): Promise<void> {
  const fd = openSync(path, 'r');
  try {
    await fsyncFd(fd);
  } finally {
    closeSync(fd);
  }
}

/**
 * refDirsToSync are the directories whose entries a committed ref update may have changed: the
 * directory each ref was renamed into, and every one above it up to the repo's own, since git
 * creates the directories a new ref needs (`refs/heads/feature/` for `refs/heads/feature/x`, a
 * new entry in `refs/heads/`), removes those a delete empties, and rewrites `packed-refs` and
 * `HEAD` at the top.
 */
export function refDirsToSync(repoPath: string, refs: readonly string[]): string[] {
  const dirs = new Set<string>([repoPath]);
  for (const ref of refs) {
    for (let d = dirname(join(repoPath, ref)); d.length > repoPath.length && d.startsWith(`${repoPath}/`); d = dirname(d)) {
      if (dirs.has(d)) break;
      dirs.add(d);
    }
  }
  return [...dirs];
}

/**
 * fsyncRefDirs makes committed ref updates durable: it fsyncs the directories of refDirsToSync
 * (git fsyncs none), skipping one a delete removed (the one above it is among them). Any other
 * failure throws, and so does a repo that is gone: a replica whose refs may not survive a crash
 * must not be confirmed.
 */
export async function fsyncRefDirs(repoPath: string, refs: readonly string[]): Promise<void> {
  await Promise.all(
    refDirsToSync(repoPath, refs).map(async (d) => {
      try {
        await fsyncPath(d);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT' || d === repoPath)
          throw new Error(`fsync of ${d} failed: ${(err as Error).message}`, { cause: err });
      }
    }),
  );
}

/**
 * syncRefs makes a committed ref transaction durable. Below BULK_REF_UPDATES refs git fsynced
 * each lock file, and the directories they were renamed into are fsynced here (fsyncRefDirs).
 * A bulk transaction's files were not fsynced: one syncfs(2) of the file system holding the
 * repo (coreutils' `sync -f`) writes them, their directories and everything else pending there.
 * Without a `sync` that can, each ref file that exists, packed-refs and the directories are
 * fsynced one by one.
 */
export async function syncRefs(repoPath: string, refs: readonly string[]): Promise<void> {
  if (refs.length < BULK_REF_UPDATES) return fsyncRefDirs(repoPath, refs);
  try {
    await execFileAsync('sync', ['-f', repoPath], { timeout: 120_000 });
    return;
  } catch {
    // Fall through to the one-by-one fsyncs: slower, same guarantee.
  }
  await Promise.all(
    [...refs, 'packed-refs'].map(async (ref) => {
      try {
        await fsyncPath(join(repoPath, ref));
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT')
          throw new Error(`fsync of ${ref} failed: ${(err as Error).message}`, { cause: err });
      }
    }),
  );
  await fsyncRefDirs(repoPath, refs);
}

async function isDir(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isDirectory();
  } catch {
    return false;
  }
}
