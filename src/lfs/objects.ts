import { createHash, randomUUID } from 'node:crypto';
import { createReadStream, type ReadStream } from 'node:fs';
import { mkdir, open, readdir, readFile, rename, rm, stat, unlink, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { Readable } from 'node:stream';
import { AppError, badRequest, errorMessage, unavailable } from '../domain/errors.js';
import { INCARNATION_ID as INCARNATION, LFS_OID } from '../domain/lfs-ids.js';
import { fsyncPath } from '../git/repo-storage.js';
import { tooLarge } from '../http/body-guards.js';

/** DEFAULT_MAX_LFS_OBJECT_BYTES is `--max-lfs-object-size`'s default (config.ts): 5 GiB. */
export const DEFAULT_MAX_LFS_OBJECT_BYTES = 5 * 1024 * 1024 * 1024;

/** REPO_FILE names, in an incarnation's directory, the repository it is of. */
const REPO_FILE = 'repo';

/** Received is an object written to a temporary file, its content checked against its oid and size. */
export interface Received {
  readonly path: string;
  readonly size: number;
}

/**
 * LfsObjects keeps a node's Git LFS objects: `<dataDir>/lfs/<incarnation>/<oid[0:2]>/<oid[2:4]>/<oid>`,
 * one directory per incarnation of a repository (a repository deleted and created again starts
 * with none of the old one's objects, and a replica copied whole by repair keeps its objects).
 * An object is written to `lfs/tmp`, its SHA-256 and size checked as it arrives, fsynced, and
 * renamed into place (its directories fsynced): once `receive` or `install` returns, it survives
 * a crash, and a reader never sees a partial object.
 */
export class LfsObjects {
  readonly dir: string;
  readonly tmpDir: string;
  /** making are the object directories being made now (directory). */
  private readonly making = new Map<string, Promise<void>>();

  constructor(dataDir: string) {
    this.dir = join(dataDir, 'lfs');
    this.tmpDir = join(this.dir, 'tmp');
  }

  /** init makes the directories and drops temporary files a stopped node left. */
  async init(): Promise<void> {
    await rm(this.tmpDir, { recursive: true, force: true });
    await mkdir(this.tmpDir, { recursive: true });
  }

  /** path is where an object of an incarnation lives. */
  path(incarnation: string, oid: string): string {
    checkIds(incarnation, oid);
    return join(this.dir, incarnation, oid.slice(0, 2), oid.slice(2, 4), oid);
  }

  /** sizeOf is an object's size, or null when this node does not hold it. */
  async sizeOf(incarnation: string, oid: string): Promise<number | null> {
    try {
      const s = await stat(this.path(incarnation, oid));
      return s.isFile() ? s.size : null;
    } catch {
      return null;
    }
  }

  /** open reads an object held here. */
  open(incarnation: string, oid: string): ReadStream {
    return createReadStream(this.path(incarnation, oid), { highWaterMark: 256 * 1024 });
  }

  /**
   * receive reads an object's content from `body` into a temporary file, checking it is exactly
   * `size` bytes (413 past `maxBytes`) whose SHA-256 is `oid` (400 otherwise), and fsyncs it.
   * The caller installs it (install) or drops it (discard).
   */
  async receive(oid: string, size: number, body: Readable, maxBytes: number): Promise<Received> {
    if (!LFS_OID.test(oid)) throw badRequest(`'${oid.slice(0, 80)}' is not an LFS object id (64 lower-case hex digits)`);
    if (size > maxBytes) throw tooLarge(`LFS object of ${size} bytes is larger than the limit of ${maxBytes} bytes`);
    const path = join(this.tmpDir, randomUUID());
    const file = await open(path, 'wx', 0o600);
    const hash = createHash('sha256');
    let written = 0;
    try {
      for await (const chunk of body) {
        const buf = chunk as Buffer;
        written += buf.length;
        if (written > size) throw badRequest(`LFS object ${oid} is longer than its size, ${size} bytes`);
        hash.update(buf);
        await file.write(buf);
      }
      if (written !== size) throw badRequest(`LFS object ${oid} is ${written} bytes, not its size, ${size}`);
      if (hash.digest('hex') !== oid) throw badRequest(`LFS object's content does not match its oid ${oid}`);
      await file.sync();
    } catch (err) {
      await file.close().catch(() => undefined);
      await unlink(path).catch(() => undefined);
      // The body's own failures (its client went away, a broken encoding) are the request's, not the node's.
      if (err instanceof AppError) throw err;
      if (noSpace(err)) throw unavailable(`no room for LFS object ${oid} under the data dir`, { retryAfter: 5 });
      if (!isBodyError(err)) throw err;
      throw badRequest(`LFS object ${oid}: request body: ${errorMessage(err)}`);
    }
    await file.close();
    return { path, size };
  }

  /**
   * install moves a received object into place for a repository's incarnation, durably (its
   * directories fsynced). The incarnation's directory, when made, names its repository
   * (`repo`), for the sweep of a node's start (sweep).
   */
  async install(ref: { readonly repoId: string; readonly incarnation: string }, oid: string, received: Received): Promise<void> {
    const { incarnation } = ref;
    const target = this.path(incarnation, oid);
    const dir = join(this.dir, incarnation, oid.slice(0, 2), oid.slice(2, 4));
    await this.directory(ref, dir);
    await rename(received.path, target);
    await fsyncPath(dir);
  }

  /**
   * directory makes an object's directory, with the ones above it, and fsyncs each entry it made
   * (up to `lfs/`); an install that finds another making the same directory waits for it, so no
   * install answers before the entries above its object are on disk.
   */
  private directory(ref: { readonly repoId: string; readonly incarnation: string }, dir: string): Promise<void> {
    const pending = this.making.get(dir);
    if (pending) return pending;
    const top = join(this.dir, ref.incarnation);
    const making = (async (): Promise<void> => {
      const made = await mkdir(dir, { recursive: true });
      if (made === undefined) return;
      if (made === top || made === this.dir) {
        await writeFile(join(top, REPO_FILE), `${ref.repoId}\n`, { mode: 0o600 });
        await fsyncPath(join(top, REPO_FILE));
      }
      // Each directory made is an entry in the one above, up to `lfs/`.
      for (const d of [dirname(dir), top, this.dir]) await fsyncPath(d);
    })();
    this.making.set(dir, making);
    const forget = (): void => {
      if (this.making.get(dir) === making) this.making.delete(dir);
    };
    making.then(forget, forget);
    return making;
  }

  /**
   * sweep removes the objects of incarnations whose replica left this node without taking them
   * (a node stopped between the two, or an upload that installed one as its repository was
   * deleted): `kept(incarnation, repoId)` says which stay (repoId null: the directory does not
   * name it). Returns how many incarnations went.
   */
  async sweep(kept: (incarnation: string, repoId: string | null) => Promise<boolean>): Promise<number> {
    let gone = 0;
    for (const incarnation of await this.incarnations()) {
      const named = await readFile(join(this.dir, incarnation, REPO_FILE), 'utf8').catch(() => null);
      if (await kept(incarnation, named?.trim() || null)) continue;
      await this.removeIncarnation(incarnation);
      gone++;
    }
    return gone;
  }

  /** discard removes a received object that will not be installed. */
  async discard(received: Received): Promise<void> {
    await unlink(received.path).catch(() => undefined);
  }

  /** list names every object held for an incarnation, with its size. */
  async list(incarnation: string): Promise<Map<string, number>> {
    checkIds(incarnation, null);
    const out = new Map<string, number>();
    const base = join(this.dir, incarnation);
    for (const a of await names(base))
      for (const b of await names(join(base, a)))
        for (const oid of await names(join(base, a, b))) {
          if (!LFS_OID.test(oid)) continue;
          const size = await this.sizeOf(incarnation, oid);
          if (size !== null) out.set(oid, size);
        }
    return out;
  }

  /** incarnations names the incarnations this node holds objects of. */
  async incarnations(): Promise<string[]> {
    return (await names(this.dir)).filter((n) => n !== 'tmp' && INCARNATION.test(n));
  }

  /** removeIncarnation deletes every object of an incarnation (its repository was deleted here, or its replica went). */
  async removeIncarnation(incarnation: string): Promise<void> {
    checkIds(incarnation, null);
    const base = join(this.dir, incarnation);
    const trashed = join(this.tmpDir, `gone-${randomUUID()}`);
    try {
      await rename(base, trashed);
    } catch {
      return;
    }
    await rm(trashed, { recursive: true, force: true });
  }
}

/** noSpace says whether an error is a full disk or quota. */
function noSpace(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return code === 'ENOSPC' || code === 'EDQUOT';
}

/** isBodyError says whether an error came from reading a body (a socket or a stream), not from this node's disk. */
function isBodyError(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return !(typeof code === 'string' && /^E(NOSPC|IO|ROFS|DQUOT|MFILE|NFILE|ACCES|PERM)$/.test(code));
}

function checkIds(incarnation: string, oid: string | null): void {
  if (!INCARNATION.test(incarnation)) throw badRequest('bad incarnation id');
  if (oid !== null && !LFS_OID.test(oid)) throw badRequest(`'${oid.slice(0, 80)}' is not an LFS object id (64 lower-case hex digits)`);
}

async function names(dir: string): Promise<string[]> {
  try {
    return await readdir(dir);
  } catch {
    return [];
  }
}
