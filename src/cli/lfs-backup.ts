import { createHash, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, open, readdir, rename, rm, stat, unlink } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { request } from 'undici';
import { errorMessage } from '../domain/errors.js';
import { INCARNATION_ID as INCARNATION, LFS_OID } from '../domain/lfs-ids.js';
import { CliError, type ApiClient } from './http-client.js';
import { layout } from './manifest.js';

/** IDLE_MS bounds how long an object's transfer may make no progress. */
const IDLE_MS = 120_000;

/** LfsCopied is what a repository's LFS objects came to in a backup or restore. */
export interface LfsCopied {
  /** objects: how many the repository holds (backup) or the backup holds for it (restore). */
  readonly objects: number;
  /** copied: how many of them were transferred now (the others were in place already). */
  readonly copied: number;
  readonly bytes: number;
}

/** objectPath is where a backup keeps an LFS object of a repository's incarnation: `lfs/<owner>/<name>/<incarnation>/<aa>/<bb>/<oid>`. */
export function objectPath(dir: string, repoId: string, incarnation: string, oid: string): string {
  return join(layout.lfs(dir, repoId, incarnation), oid.slice(0, 2), oid.slice(2, 4), oid);
}

/**
 * backupLfs copies the LFS objects of a repository the backup lacks (by GET
 * /repos/:id/lfs, then each object's LFS download), each checked against its oid as it arrives
 * and renamed into place once whole. 409 when a replica did not answer the listing: objects only
 * it held would be missed (the next backup tries again).
 */
export async function backupLfs(
  api: ApiClient,
  base: string,
  token: string | null,
  out: string,
  repoId: string,
  incarnation: string,
): Promise<LfsCopied> {
  if (!INCARNATION.test(incarnation)) throw new CliError(`${repoId}: the cluster named an odd incarnation`);
  const list = await api.get<{ incarnation?: string; objects: Array<{ oid: string; size: number }>; complete: boolean }>(
    `/repos/${repoId}/lfs`,
  );
  // Deleted and made again since its mirror was read: the listing is the new repository's.
  if (list.incarnation !== incarnation) throw new CliError(`${repoId} was deleted and made again during the backup: run backup again`);
  // Another incarnation's objects (the repository deleted and made again) are not this one's.
  for (const other of await names(layout.lfsOf(out, repoId)))
    if (other !== incarnation) await rm(join(layout.lfsOf(out, repoId), other), { recursive: true, force: true });
  let copied = 0;
  let bytes = 0;
  for (const o of list.objects) {
    if (!LFS_OID.test(o.oid)) continue;
    const path = objectPath(out, repoId, incarnation, o.oid);
    if ((await sizeOf(path)) === o.size) continue;
    await download(`${base}/${repoId}.git/info/lfs/objects/${o.oid}`, token, path, o.oid, layout.tmp(out));
    copied++;
    bytes += o.size;
  }
  if (!list.complete)
    throw new CliError(
      `a replica of ${repoId} did not list its LFS objects: ${list.objects.length} copied from the others; run backup again`,
    );
  return { objects: list.objects.length, copied, bytes };
}

/** restoreLfs uploads the LFS objects the backup holds for a repository's incarnation (its manifest entry's). */
export async function restoreLfs(base: string, token: string | null, dir: string, repoId: string, incarnation: string): Promise<LfsCopied> {
  if (!INCARNATION.test(incarnation)) return { objects: 0, copied: 0, bytes: 0 };
  const objects = await backedUp(layout.lfs(dir, repoId, incarnation));
  let copied = 0;
  let bytes = 0;
  for (const [oid, path] of objects) {
    const size = (await stat(path)).size;
    await upload(`${base}/${repoId}.git/info/lfs/objects/${oid}`, token, path, size);
    copied++;
    bytes += size;
  }
  return { objects: objects.size, copied, bytes };
}

/** backedUp lists the objects under a repository's LFS directory of a backup: oid → file. */
async function backedUp(dir: string): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for (const a of await names(dir))
    for (const b of await names(join(dir, a)))
      for (const oid of await names(join(dir, a, b))) if (LFS_OID.test(oid)) out.set(oid, join(dir, a, b, oid));
  return out;
}

async function download(url: string, token: string | null, path: string, oid: string, tmpDir: string): Promise<void> {
  await mkdir(tmpDir, { recursive: true, mode: 0o700 });
  const tmp = join(tmpDir, `lfs-${randomBytes(8).toString('hex')}`);
  const file = await open(tmp, 'wx', 0o600);
  const hash = createHash('sha256');
  try {
    const res = await request(url, {
      headers: token ? { authorization: `Bearer ${token}` } : {},
      headersTimeout: IDLE_MS,
      bodyTimeout: IDLE_MS,
    }).catch((err: unknown) => {
      throw new CliError(`cannot read ${url}: ${errorMessage(err)}`, null, { cause: err });
    });
    if (res.statusCode !== 200)
      throw new CliError(`GET ${url}: ${res.statusCode} ${(await res.body.text()).slice(0, 200)}`, res.statusCode);
    for await (const chunk of res.body) {
      hash.update(chunk as Buffer);
      await file.write(chunk as Buffer);
    }
    if (hash.digest('hex') !== oid) throw new CliError(`LFS object ${oid} read from the cluster does not match its oid`);
    await file.sync();
    await file.close();
    await mkdir(dirname(path), { recursive: true, mode: 0o700 });
    await rename(tmp, path);
  } catch (err) {
    await file.close().catch(() => undefined);
    await unlink(tmp).catch(() => undefined);
    throw err;
  }
}

async function upload(url: string, token: string | null, path: string, size: number): Promise<void> {
  const res = await request(url, {
    method: 'PUT',
    headers: {
      'content-type': 'application/octet-stream',
      'content-length': String(size),
      ...(token ? { authorization: `Bearer ${token}` } : {}),
    },
    body: createReadStream(path),
    headersTimeout: IDLE_MS,
    bodyTimeout: IDLE_MS,
  }).catch((err: unknown) => {
    throw new CliError(`cannot send ${url}: ${errorMessage(err)}`, null, { cause: err });
  });
  const text = await res.body.text();
  if (res.statusCode !== 200) throw new CliError(`PUT ${url}: ${res.statusCode} ${text.slice(0, 200)}`, res.statusCode);
}

async function sizeOf(path: string): Promise<number | null> {
  return stat(path).then(
    (s) => (s.isFile() ? s.size : null),
    () => null,
  );
}

async function names(dir: string): Promise<string[]> {
  return readdir(dir).catch(() => []);
}
