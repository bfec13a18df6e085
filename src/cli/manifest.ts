import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { replicaChecksum, type RefEntry } from '../domain/checksum.js';
import { errorMessage } from '../domain/errors.js';
import { readHeadTarget } from '../git/repo-storage.js';
import { runGit } from './git-client.js';
import { CliError } from './http-client.js';

/** MANIFEST_VERSION is the version of `<backup>/manifest.json`. */
export const MANIFEST_VERSION = 1;

/** BackupEntry is what a backup records of one repository: the committed generation its mirror holds. */
export interface BackupEntry {
  readonly id: string;
  readonly incarnation: string;
  readonly generation: number;
  /** checksum is the store's checksum at `generation`, which the mirror's refs and HEAD equal. */
  readonly checksum: string;
  readonly visibility: 'public' | 'private';
  readonly grants: Array<{ grantee: string; role: string }>;
  /** head is HEAD's target in the mirror (null: detached or missing). */
  readonly head: string | null;
  readonly refs: number;
  /** lfs_objects: the Git LFS objects backed up with it (absent: a backup made before they were). */
  readonly lfs_objects?: number;
  readonly fetched_at: string;
}

/** Manifest is `<backup>/manifest.json`: the cluster it came from and every repository in the backup. */
export interface Manifest {
  readonly version: number;
  readonly source: string;
  readonly started_at: string;
  readonly finished_at: string;
  readonly repos: BackupEntry[];
}

/** Layout names the files of a backup directory. */
export const layout = {
  manifest: (dir: string): string => join(dir, 'manifest.json'),
  /** records holds the store's directory records (GET /admin/export): token hashes, so 0600. */
  records: (dir: string): string => join(dir, 'records.json'),
  mirror: (dir: string, repoId: string): string => join(dir, 'repos', `${repoId}.git`),
  /**
   * lfs holds the Git LFS objects of one incarnation of a repository (`<aa>/<bb>/<oid>` below
   * it): a repository deleted and made again under its name does not inherit the old one's.
   */
  lfs: (dir: string, repoId: string, incarnation: string): string => join(dir, 'lfs', repoId, incarnation),
  /** lfsOf holds every incarnation's directory of a repository (lfs). */
  lfsOf: (dir: string, repoId: string): string => join(dir, 'lfs', repoId),
  tmp: (dir: string): string => join(dir, 'tmp'),
};

/** readManifest reads a backup's manifest; none (a first backup) is null unless `required`. */
export async function readManifest(dir: string, required = false): Promise<Manifest | null> {
  let text: string;
  try {
    text = await readFile(layout.manifest(dir), 'utf8');
  } catch (err) {
    if (!required && (err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new CliError(`cannot read ${layout.manifest(dir)}: ${errorMessage(err)}`, null, { cause: err });
  }
  let m: Manifest;
  try {
    m = JSON.parse(text) as Manifest;
  } catch (err) {
    throw new CliError(`${layout.manifest(dir)} is not JSON`, null, { cause: err });
  }
  if (m.version !== MANIFEST_VERSION || !Array.isArray(m.repos))
    throw new CliError(`${layout.manifest(dir)}: not a version ${MANIFEST_VERSION} backup manifest`);
  return m;
}

/** writePrivate writes a file (mode 0600) by a rename, so a reader sees the old or the new whole file. */
export async function writePrivate(path: string, text: string): Promise<void> {
  await mkdir(join(path, '..'), { recursive: true, mode: 0o700 });
  const tmp = `${path}.tmp`;
  await writeFile(tmp, text, { mode: 0o600 });
  await rename(tmp, path);
}

/** MirrorRefs are a local bare repository's refs and HEAD's symbolic target (null: detached or missing). */
export interface MirrorRefs {
  readonly refs: RefEntry[];
  readonly head: string | null;
}

/** MirrorState is what a local mirror holds: its checksum by the cluster's definition, its ref count and HEAD. */
export interface MirrorState {
  readonly checksum: string;
  readonly refs: number;
  readonly head: string | null;
}

/** readMirror lists a local bare repository's refs (`for-each-ref`, as a replica's are read) and HEAD. */
export async function readMirror(path: string): Promise<MirrorRefs> {
  const { stdout } = await runGit(['for-each-ref', '--format=%(objectname) %(refname)'], { cwd: path });
  const refs: RefEntry[] = [];
  for (const line of stdout.split('\n')) {
    const sp = line.indexOf(' ');
    if (sp > 0) refs.push({ oid: line.slice(0, sp), name: line.slice(sp + 1) });
  }
  return { refs, head: await readHeadTarget(path) };
}

/** mirrorState computes a local mirror's checksum exactly as a replica's is computed (domain/checksum). */
export async function mirrorState(path: string): Promise<MirrorState> {
  const { refs, head } = await readMirror(path);
  return { checksum: replicaChecksum(refs, head), refs: refs.length, head };
}

/** refCount says `1 ref` or `N refs`. */
export function refCount(n: number): string {
  return `${n} ref${n === 1 ? '' : 's'}`;
}
