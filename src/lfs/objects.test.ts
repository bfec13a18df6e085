import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, readdir, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { beforeEach, describe, expect, it } from 'vitest';
import { LfsObjects } from './objects.js';

const INC = '0b6f0e9e-4c1e-4c55-9d59-1f3c2f4a7d11';
const REF = { repoId: 'alice/assets', incarnation: INC };

function oidOf(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex');
}

/** chunks sends a buffer as a stream of small pieces, as a socket does. */
function chunks(b: Buffer, size = 7): Readable {
  const parts: Buffer[] = [];
  for (let i = 0; i < b.length; i += size) parts.push(b.subarray(i, i + size));
  return Readable.from(parts);
}

describe('LfsObjects', () => {
  let objects: LfsObjects;
  beforeEach(async () => {
    objects = new LfsObjects(await mkdtemp(join(tmpdir(), 'gitrep-lfs-objects-')));
    await objects.init();
  });

  it('keeps an object whose content is its oid, under its incarnation, and names the repository', async () => {
    const content = randomBytes(1000);
    const oid = oidOf(content);
    await objects.install(REF, oid, await objects.receive(oid, 1000, chunks(content), 10_000));
    expect(await objects.sizeOf(INC, oid)).toBe(1000);
    expect(await readFile(objects.path(INC, oid))).toEqual(content);
    expect(await readFile(join(objects.dir, INC, 'repo'), 'utf8')).toBe('alice/assets\n');
    expect(await objects.list(INC)).toEqual(new Map([[oid, 1000]]));
    expect(await readdir(objects.tmpDir)).toEqual([]);
  });

  it('refuses content that is not its oid, longer or shorter than its size, or past the limit, and keeps nothing', async () => {
    const content = randomBytes(100);
    const oid = oidOf(content);
    await expect(objects.receive(oid, 100, chunks(randomBytes(100)), 10_000)).rejects.toThrow(/does not match its oid/);
    await expect(objects.receive(oid, 99, chunks(content), 10_000)).rejects.toThrow(/longer than its size/);
    await expect(objects.receive(oid, 101, chunks(content), 10_000)).rejects.toThrow(/100 bytes, not its size, 101/);
    await expect(objects.receive(oid, 100, chunks(content), 99)).rejects.toThrow(/larger than the limit/);
    await expect(objects.receive('../../etc/passwd', 100, chunks(content), 10_000)).rejects.toThrow(/not an LFS object id/);
    expect(() => objects.path('../x', oid)).toThrow(/bad incarnation/);
    expect(await readdir(objects.tmpDir)).toEqual([]);
    expect(await objects.sizeOf(INC, oid)).toBeNull();
  });

  it('takes an empty object', async () => {
    const oid = oidOf(Buffer.alloc(0));
    await objects.install(REF, oid, await objects.receive(oid, 0, Readable.from([]), 10));
    expect(await objects.sizeOf(INC, oid)).toBe(0);
  });

  it('removes an incarnation, and sweeps those not kept', async () => {
    const a = randomBytes(10);
    const other = { repoId: 'bob/x', incarnation: 'c3a1d7f2-0000-4000-8000-000000000001' };
    await objects.install(REF, oidOf(a), await objects.receive(oidOf(a), 10, chunks(a), 100));
    await objects.install(other, oidOf(a), await objects.receive(oidOf(a), 10, chunks(a), 100));
    const asked: Array<[string, string | null]> = [];
    const gone = await objects.sweep(async (inc, repoId) => {
      asked.push([inc, repoId]);
      return repoId === 'alice/assets';
    });
    expect(gone).toBe(1);
    expect(asked.sort()).toEqual([
      [INC, 'alice/assets'],
      [other.incarnation, 'bob/x'],
    ]);
    expect(existsSync(join(objects.dir, other.incarnation))).toBe(false);
    expect(await objects.sizeOf(INC, oidOf(a))).toBe(10);
    await objects.removeIncarnation(INC);
    expect(await objects.incarnations()).toEqual([]);
  });
});
