import { copyFile, readFile, rm, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { gitOk, tempDir } from '../../test/helpers/git.js';
import { packIndexHolds } from './pack-index.js';

describe('packIndexHolds (indexes written by the real git index-pack)', () => {
  let dir: string;
  /** inPack: every object of the test pack (a commit, its tree and 600 blobs), as git lists them. */
  let inPack: string[];
  /** elsewhere: objects of the repo that are not in the pack. */
  let elsewhere: string[];
  let idx: string;
  let pack: string;

  beforeAll(async () => {
    dir = await tempDir('gitrep-idx-');
    await gitOk(['init', '-q', '-b', 'main', dir]);
    // Enough objects that most first bytes have several names to search among.
    await Promise.all(Array.from({ length: 600 }, (_, i) => writeFile(join(dir, `f${i}.txt`), `file ${i}\n`)));
    await gitOk(['add', '.'], { cwd: dir });
    await gitOk(['commit', '-q', '-m', 'many'], { cwd: dir });
    const tip = (await gitOk(['rev-parse', 'HEAD'], { cwd: dir })).trim();
    await writeFile(join(dir, 'other.txt'), 'not packed\n');
    await gitOk(['add', 'other.txt'], { cwd: dir });
    await gitOk(['commit', '-q', '-m', 'other'], { cwd: dir });
    const other = (await gitOk(['rev-parse', 'HEAD'], { cwd: dir })).trim();
    elsewhere = [
      other,
      (await gitOk(['rev-parse', 'HEAD:other.txt'], { cwd: dir })).trim(),
      (await gitOk(['rev-parse', 'HEAD^{tree}'], { cwd: dir })).trim(),
    ];
    const packBase = join(dir, 'test');
    const listed = (await gitOk(['rev-list', '--objects', tip], { cwd: dir })).split('\n').filter(Boolean);
    inPack = listed.map((l) => l.slice(0, 40));
    const hash = (await gitOk(['pack-objects', '-q', packBase], { cwd: dir, input: `${inPack.join('\n')}\n` })).trim();
    pack = `${packBase}-${hash}.pack`;
    // The index as index-pack writes it for a received pack.
    idx = join(dir, 'received.idx');
    await gitOk(['index-pack', '-o', idx, pack], { cwd: dir });
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('finds every object of the pack, one by one and all at once', () => {
    expect(inPack.length).toBeGreaterThan(600);
    for (const oid of inPack) expect(packIndexHolds(idx, [oid])).toBe(true);
    expect(packIndexHolds(idx, inPack)).toBe(true);
  });

  it('finds no object that is not in the pack, and a list with one such is not held', () => {
    for (const oid of elsewhere) expect(packIndexHolds(idx, [oid])).toBe(false);
    expect(packIndexHolds(idx, [...inPack.slice(0, 5), elsewhere[0]!])).toBe(false);
    // The extremes of the name space.
    expect(packIndexHolds(idx, ['0'.repeat(40)])).toBe(false);
    expect(packIndexHolds(idx, ['f'.repeat(40)])).toBe(false);
  });

  it('an empty list is held; names that are not hex object names are not', () => {
    expect(packIndexHolds(idx, [])).toBe(true);
    expect(packIndexHolds(idx, [inPack[0]!.toUpperCase()])).toBe(false);
    expect(packIndexHolds(idx, [inPack[0]!.slice(0, 39)])).toBe(false);
    expect(packIndexHolds(idx, [`${inPack[0]!.slice(0, 39)}g`])).toBe(false);
    expect(packIndexHolds(idx, [inPack[0]!, `${inPack[1]!}00`])).toBe(false);
  });

  it('an index that is missing, cut short or of version 1 holds nothing', async () => {
    expect(packIndexHolds(join(dir, 'absent.idx'), [inPack[0]!])).toBe(false);
    const short = join(dir, 'short.idx');
    await copyFile(idx, short);
    const full = (await readFile(idx)).length;
    await truncate(short, full - 100);
    expect(packIndexHolds(short, [inPack[0]!])).toBe(false);
    await truncate(short, 500);
    expect(packIndexHolds(short, [inPack[0]!])).toBe(false);
    const v1 = join(dir, 'v1.idx');
    await gitOk(['index-pack', '--index-version=1', '-o', v1, pack], { cwd: dir });
    expect(packIndexHolds(v1, [inPack[0]!])).toBe(false);
  });
});
