import { describe, expect, it } from 'vitest';
import type { RepoId } from '../domain/repo-id.js';
import { SqliteStore } from '../store/sqlite/sqlite-store.js';
import type { ClusterStore } from '../store/types.js';
import { authorizeRepo } from './authorize.js';
import { Directory, RECHECK_MS } from './directory.js';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** counting wraps a store so that a test can count its getRepo reads (a policy load each). */
function counting(real: ClusterStore): { store: ClusterStore; loads: () => number } {
  let n = 0;
  const store = new Proxy(real, {
    get(target, prop, receiver) {
      const v = Reflect.get(target, prop, receiver) as unknown;
      if (typeof v !== 'function') return v;
      return (...args: unknown[]) => {
        if (prop === 'getRepo') n++;
        return (v as (...a: unknown[]) => unknown).apply(target, args);
      };
    },
  });
  return { store, loads: () => n };
}

describe('authorizeRepo', () => {
  it("decides a signed-in caller's refusal again on views at most RECHECK_MS old; not one no view can change", async () => {
    const real = new SqliteStore(':memory:');
    const { store, loads } = counting(real);
    const d = new Directory(store);
    await d.addUser('alice', false);
    await d.addUser('bob', false);
    const repo = 'alice/x' as RepoId;
    const record = { repoId: repo, incarnation: 'i1', replicas: ['n1'], generation: 0, checksum: 'c', createdAt: '' };
    await real.commitCreate({ txnId: 't', coordinator: 'n1', record });
    const bob = await d.principal((await d.user('bob'))!);
    const alice = await d.principal((await d.user('alice'))!);
    expect((await authorizeRepo(d, bob, 'write', repo, 'read')).decision).toBe('not_found');
    // A grant written through another node (straight to the store: this node's cache holds the old view).
    await real.setMeta(`grants/${repo}/user:bob`, 'read');
    await sleep(RECHECK_MS + 50);
    expect(await authorizeRepo(d, bob, 'write', repo, 'read')).toEqual({ decision: 'allow', incarnation: 'i1' });
    // A refusal by the token's scope, or by a scope below the need, is not read again.
    await sleep(RECHECK_MS + 50);
    const before = loads();
    expect((await authorizeRepo(d, alice, 'read', repo, 'write')).decision).toBe('forbidden');
    expect((await authorizeRepo(d, bob, 'read', repo, 'write')).decision).toBe('forbidden');
    expect(loads()).toBe(before);
    expect((await authorizeRepo(d, null, null, repo, 'read')).decision).toBe('unauthenticated');
    await real.close();
  });
});
