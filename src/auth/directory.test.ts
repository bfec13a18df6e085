import { describe, expect, it } from 'vitest';
import { StoreUnavailableError } from '../domain/errors.js';
import type { RepoId } from '../domain/repo-id.js';
import { SqliteStore } from '../store/sqlite/sqlite-store.js';
import type { ClusterStore } from '../store/types.js';
import { Directory } from './directory.js';

/** created writes a repository's record, as a create's decision does, under a given incarnation. */
async function created(store: ClusterStore, repoId: string, incarnation = `inc-${repoId}`): Promise<void> {
  const record = { repoId, incarnation, replicas: ['n1'], generation: 0, checksum: 'c', createdAt: new Date().toISOString() };
  expect((await store.commitCreate({ txnId: `t-${incarnation}`, coordinator: 'n1', record })).written).toBe(true);
}

/** edge is the real store with some of its methods replaced: the store's edge a test controls. */
function edge(real: ClusterStore, replaced: Partial<ClusterStore>): ClusterStore {
  return new Proxy(real, {
    get(target, prop, receiver) {
      if (prop in replaced) return replaced[prop as keyof ClusterStore];
      const v = Reflect.get(target, prop, receiver) as unknown;
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
    },
  });
}

describe('Directory', () => {
  it('policies() gives every repo the policy policy() gives, from two reads', async () => {
    const store = new SqliteStore(':memory:');
    const d = new Directory(store);
    const a = 'acme/a' as RepoId;
    const b = 'acme/b' as RepoId;
    const ab = 'acme/a-b' as RepoId;
    for (const id of [a, b, ab]) await created(store, id);
    await d.setVisibility(a, 'public');
    await d.grant(b, 'user:alice', 'write');
    await d.grant(b, 'org:team', 'read');
    await d.grant(ab, 'user:bob', 'admin');
    const of = await d.policies();
    for (const id of [a, b, ab, 'other/x' as RepoId]) {
      const { incarnation, ...policy } = await d.policy(id);
      expect(of(id)).toEqual(policy);
      expect(incarnation).toBe(id === 'other/x' ? null : `inc-${id}`);
    }
    expect(of(b).grants.get('org:team')).toBe('read');
    await store.close();
  });

  it('holds an owner to maxReposPerOwner repositories and a user to maxOrgsPerUser owned organisations; 0 is no cap', async () => {
    const store = new SqliteStore(':memory:');
    const d = new Directory(store, { maxReposPerOwner: 2, maxOrgsPerUser: 1 });
    await d.addUser('alice', false);
    await created(store, 'alice/a');
    await d.roomForRepo('alice');
    await created(store, 'alice/b');
    // Only ids under `alice/` count: not `alice-x/…` or `alice.x/…`, which sort beside them.
    await created(store, 'alice-x/a');
    await created(store, 'alice.x/a');
    await expect(d.roomForRepo('alice')).rejects.toThrow(/'alice' holds 2 repositories/);
    await d.roomForRepo('alice-x');
    await d.createOrg('acme', 'alice');
    await expect(d.createOrg('acme2', 'alice')).rejects.toThrow(/alice owns 1 organisations/);
    expect(await d.orgExists('acme2')).toBe(false);
    // A member's role that is not owner does not count; a cluster admin's create is not held.
    await d.createOrg('beta', 'alice', { byAdmin: true });
    await d.addUser('bob', false);
    await d.setMember('beta', 'bob', 'member');
    await d.createOrg('bob-org', 'bob');
    const open = new Directory(store, { maxReposPerOwner: 0, maxOrgsPerUser: 0 });
    await open.roomForRepo('alice');
    await open.createOrg('acme3', 'alice');
    await store.close();
  });

  it('deleteOrg takes only that organisation: its record, grants, memberships and name', async () => {
    const store = new SqliteStore(':memory:');
    const d = new Directory(store);
    for (const u of ['alice', 'bob']) await d.addUser(u, false);
    await d.createOrg('acme', 'alice');
    await d.createOrg('acme-labs', 'alice');
    await d.setMember('acme', 'bob', 'member');
    await d.setMember('acme-labs', 'bob', 'member');
    await created(store, 'alice/x');
    await d.grant('alice/x' as RepoId, 'org:acme', 'write');
    await d.grant('alice/x' as RepoId, 'org:acme-labs', 'read');
    await created(store, 'acme/app');
    await expect(d.deleteOrg('acme')).rejects.toThrow(/holds 1 repositories/);
    expect(await d.orgExists('acme')).toBe(true);
    const lock = await store.acquireLock('acme/app', 'n1', 10_000);
    const base = { repoId: 'acme/app', coordinator: 'n1', incarnation: 'inc-acme/app', baseGeneration: 0 };
    expect((await store.commitDelete({ ...base, txnId: 'del', fencingToken: lock!.token })).written).toBe(true);
    await d.deleteOrg('acme');
    await expect(d.deleteOrg('acme')).rejects.toThrow(/not found/);
    expect(await d.orgExists('acme')).toBe(false);
    expect([...(await d.policy('alice/x' as RepoId)).grants]).toEqual([['org:acme-labs', 'read']]);
    const bob = await d.principal((await d.user('bob'))!);
    expect([...bob.orgs]).toEqual([['acme-labs', 'member']]);
    // The name is free, in any case.
    await d.createOrg('ACME', 'bob');
    expect(await d.members('ACME')).toEqual([{ user: 'bob', role: 'owner' }]);
    await store.close();
  });

  it('serves the last value it read while the store is unreachable, and fails closed on a key it never read', async () => {
    const real = new SqliteStore(':memory:');
    let down = false;
    // The store's edge: the real store until it goes down, then every call fails as an outage does.
    const store = new Proxy(real, {
      get(target, prop, receiver) {
        const v = Reflect.get(target, prop, receiver) as unknown;
        if (typeof v !== 'function') return v;
        return (...args: unknown[]) =>
          down ? Promise.reject(new StoreUnavailableError('down')) : (v as (...a: unknown[]) => unknown).apply(target, args);
      },
    });
    const d = new Directory(store);
    await created(real, 'acme/a');
    await d.setVisibility('acme/a' as RepoId, 'public');
    expect((await d.policy('acme/a' as RepoId)).visibility).toBe('public');
    await new Promise((r) => setTimeout(r, 1_100));
    down = true;
    expect((await d.policy('acme/a' as RepoId)).visibility).toBe('public');
    await expect(d.policy('acme/never' as RepoId)).rejects.toBeInstanceOf(StoreUnavailableError);
    await real.close();
  });

  it('a grant or a public visibility is for the repository as it is: none for a missing one, undone if it was created again meanwhile', async () => {
    const real = new SqliteStore(':memory:');
    const repo = 'acme/r' as RepoId;
    let swapAfter = Infinity;
    // The store's edge: the real store, except that from the nth read of the repository on it
    // answers as if the repository had been deleted and created again (a new incarnation).
    const store = edge(real, {
      getRepo: async (id: string) => {
        const r = await real.getRepo(id);
        return r && --swapAfter < 0 ? { ...r, incarnation: 'again' } : r;
      },
    });
    const d = new Directory(store);
    await expect(d.grant(repo, 'user:mallory', 'write')).rejects.toThrow(/not found/);
    await expect(d.setVisibility(repo, 'public')).rejects.toThrow(/not found/);
    await created(real, repo);
    // Asked for an incarnation it no longer is: 404, nothing written.
    await expect(d.setVisibility(repo, 'public', 'older')).rejects.toThrow(/not found/);
    // The second read (after the write) finds another incarnation: the write is undone.
    swapAfter = 1;
    await expect(d.grant(repo, 'user:mallory', 'write')).rejects.toThrow(/deleted meanwhile/);
    swapAfter = 1;
    await expect(d.setVisibility(repo, 'public')).rejects.toThrow(/deleted meanwhile/);
    swapAfter = Infinity;
    expect(await real.getMeta('grants/acme/r/user:mallory')).toBeNull();
    expect(await d.policy(repo)).toEqual({ owner: 'acme', visibility: 'private', grants: new Map(), incarnation: 'inc-acme/r' });
    // A policy read that found no repository binds to none: ''.
    await expect(d.grant(repo, 'user:mallory', 'write', '')).rejects.toThrow(/not found/);
    await d.grant(repo, 'user:carol', 'read', 'inc-acme/r');
    expect((await d.policy(repo)).grants.get('user:carol')).toBe('read');
    await real.close();
  });

  it("removing a member removes their grants on the organisation's repositories; a removal cut short is tried again", async () => {
    const real = new SqliteStore(':memory:');
    let failGrantDelete = true;
    const store = edge(real, {
      deleteMeta: async (key: string) => {
        if (failGrantDelete && key.startsWith('grants/')) {
          failGrantDelete = false;
          throw new StoreUnavailableError('store lost');
        }
        return real.deleteMeta(key);
      },
    });
    const d = new Directory(store);
    await d.addUser('alice', false);
    await d.addUser('gina', false);
    await d.createOrg('acme', 'alice');
    await d.setMember('acme', 'gina', 'member');
    for (const id of ['acme/a', 'acme/b', 'other/c']) await created(real, id);
    await d.grant('acme/a' as RepoId, 'user:gina', 'admin');
    await d.grant('acme/b' as RepoId, 'user:gina', 'write');
    await d.grant('acme/b' as RepoId, 'user:alice', 'write');
    await d.grant('other/c' as RepoId, 'user:gina', 'read');
    await expect(d.removeMember('acme', 'gina')).rejects.toThrow(/store lost/);
    // Cut short, gina is still a member: the removal can be asked again, and finishes.
    expect(await d.memberRoleNow('acme', 'gina')).toBe('member');
    await d.removeMember('acme', 'gina');
    expect(await d.memberRoleNow('acme', 'gina')).toBeNull();
    expect((await d.policy('acme/a' as RepoId)).grants.size).toBe(0);
    expect([...(await d.policy('acme/b' as RepoId)).grants.keys()]).toEqual(['user:alice']);
    // Grants outside the organisation stay.
    expect((await d.policy('other/c' as RepoId)).grants.get('user:gina')).toBe('read');
    await real.close();
  });

  it('names that differ in case only are one namespace: no user or organisation beside another', async () => {
    const store = new SqliteStore(':memory:');
    const d = new Directory(store);
    await d.addUser('alice', false);
    await d.createOrg('acme', 'alice');
    await expect(d.addUser('Alice', false)).rejects.toThrow(/differs from the existing name 'alice' in case only/);
    await expect(d.createOrg('ALICE', 'alice')).rejects.toThrow(/in case only/);
    await expect(d.addUser('Acme', false)).rejects.toThrow(/existing name 'acme'/);
    await expect(d.createOrg('acme', 'alice')).rejects.toThrow(/already exists/);
    await d.createOrg('acme-labs', 'alice');
    // Two creations of one name at once (in the same millisecond, often): one wins, one owner.
    await d.addUser('bob', false);
    for (let i = 0; i < 20; i++) {
      const results = await Promise.allSettled([d.createOrg(`race${i}`, 'alice'), d.createOrg(`race${i}`, 'bob')]);
      expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(1);
      expect(await d.members(`race${i}`)).toHaveLength(1);
    }
    // Two creations racing for one name in two cases (or as a user and an organisation): one wins.
    for (const [a, b] of [
      ['Zeta', 'zeta'],
      ['omega', 'omega'],
    ] as const) {
      const results = await Promise.allSettled([d.createOrg(a, 'alice'), a === b ? d.addUser(b, false) : d.createOrg(b, 'alice')]);
      expect(
        results.filter((r) => r.status === 'fulfilled'),
        `${a} and ${b}`,
      ).toHaveLength(1);
    }
    expect(await d.namespaceExists('omega')).toBe(true);
    await store.close();
  });
});
