import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { sweepLeftovers } from './leftovers.js';

describe('sweepLeftovers', () => {
  const dirs: string[] = [];
  afterEach(() => {
    for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
  });

  function tree(files: readonly string[]): string {
    const root = mkdtempSync(join(tmpdir(), 'leftovers-'));
    dirs.push(root);
    for (const f of files) {
      const p = join(root, f);
      if (f.endsWith('/')) mkdirSync(p, { recursive: true });
      else {
        mkdirSync(dirname(p), { recursive: true });
        writeFileSync(p, 'x');
      }
    }
    return root;
  }

  it('removes locks, quarantines, stray keeps and tmp files, and keeps refs, packs and in-doubt keeps', () => {
    const repo = 'repos/acme/app.git';
    const root = tree([
      `${repo}/HEAD`,
      `${repo}/HEAD.lock`,
      `${repo}/packed-refs`,
      `${repo}/packed-refs.lock`,
      `${repo}/packed-refs.new`,
      `${repo}/config.lock`,
      `${repo}/refs/heads/main`,
      `${repo}/refs/heads/main.lock`,
      `${repo}/refs/heads/deep/topic.lock`,
      `${repo}/refs/tags/`,
      `${repo}/objects/incoming-abc/x`,
      `${repo}/objects/tmp_objdir-incoming-def/y`,
      `${repo}/objects/ab/cdef`,
      `${repo}/objects/pack/pack-1.pack`,
      `${repo}/objects/pack/pack-1.keep`,
      `${repo}/objects/pack/pack-2.keep`,
      `${repo}/objects/pack/tmp_pack_9`,
      'repos/other/lib.git/refs/heads/x.lock',
      'repos/stray-file',
      'tmp/create-1.git/HEAD',
      'tmp/create-2.git/HEAD',
    ]);
    const keep = [join(root, repo, 'objects/pack/pack-2.keep'), join(root, 'tmp/create-2.git')];
    expect(sweepLeftovers(join(root, 'repos'), join(root, 'tmp'), keep)).toBe(11);
    const left = (p: string): boolean => existsSync(join(root, p));
    for (const p of [
      'HEAD',
      'packed-refs',
      'refs/heads/main',
      'refs/tags',
      'objects/ab/cdef',
      'objects/pack/pack-1.pack',
      'objects/pack/pack-2.keep',
    ])
      expect(left(`${repo}/${p}`), p).toBe(true);
    for (const p of [
      'HEAD.lock',
      'packed-refs.lock',
      'packed-refs.new',
      'config.lock',
      'refs/heads/main.lock',
      'refs/heads/deep/topic.lock',
      'objects/incoming-abc',
      'objects/tmp_objdir-incoming-def',
      'objects/pack/pack-1.keep',
      'objects/pack/tmp_pack_9',
    ])
      expect(left(`${repo}/${p}`), p).toBe(false);
    expect(left('repos/other/lib.git/refs/heads/x.lock')).toBe(false);
    expect(left('repos/stray-file')).toBe(true);
    expect(left('tmp/create-1.git')).toBe(false);
    expect(left('tmp/create-2.git')).toBe(true);
  });

  it('does nothing where there is nothing', () => {
    const root = tree(['repos/']);
    expect(sweepLeftovers(join(root, 'repos'), join(root, 'tmp'), [])).toBe(0);
    expect(sweepLeftovers(join(root, 'absent'), join(root, 'absent-tmp'), [])).toBe(0);
  });
});
