import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { countStoreCalls } from './counted.js';
import { SqliteStore } from './sqlite/sqlite-store.js';

describe('countStoreCalls', () => {
  const dirs: string[] = [];
  afterEach(async () => {
    for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true });
  });

  it('counts each call by method and passes its result through', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'counted-'));
    dirs.push(dir);
    const counts = new Map<string, number>();
    const store = countStoreCalls(new SqliteStore(join(dir, 'c.db')), { inc: ({ op }) => counts.set(op, (counts.get(op) ?? 0) + 1) });
    expect(store.kind).toBe('sqlite');
    expect(await store.setMetaIfAbsent('k', 'v')).toBe('v');
    expect(await store.getMeta('k')).toBe('v');
    expect(await store.getMeta('absent')).toBeNull();
    expect(await store.listRepos()).toEqual([]);
    expect(Object.fromEntries(counts)).toEqual({ setMetaIfAbsent: 1, getMeta: 2, listRepos: 1 });
    await store.close();
    expect(counts.has('close')).toBe(false);
  });
});
