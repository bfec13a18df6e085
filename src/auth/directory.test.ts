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

/** deleted removes a repository's record made by `created`, as a delete's decision does. */
async function deleted(store: ClusterStore, repoId: string, incarnation = `inc-${repoId}`): Promise<void> {
  const lock = await store.acquireLock(repoId, 'n1', 10_000);
  const base = { repoId, coordinator: 'n1', incarnation, baseGeneration: 0, fencingToken: lock!.token };
  expect((await store.commitDelete({ ...base, txnId: `d-${incarnation}` })).written).toBe(true);
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
    await d.createOrg('team', 'alice');
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

  it('holds an owner to maxReposPerOwner repositories and a user to maxOrgsPerUser organisations created; 0 is no cap', async () => {
    const store = new SqliteStore(':memory:');
    const d = new Directory(store, { maxReposPerOwner: 2, maxOrgsPerUser: 1 });
    for (const u of ['alice', 'bob', 'carol']) await d.addUser(u, false);
    await created(store, 'alice/a');
    await d.roomForRepo('alice');
    await created(store, 'alice/b');
    // Only ids under `alice/` count: not `alice-x/…` or `alice.x/…`, which sort beside them.
    await created(store, 'alice-x/a');
    await created(store, 'alice.x/a');
    await expect(d.roomForRepo('alice')).rejects.toThrow(/'alice' holds 2 repositories/);
    await d.roomForRepo('alice-x');
    // Once made, a create is checked with itself counted; and against the namespace it began in.
    await d.createdFits('alice', 'user:alice');
    await created(store, 'alice/c');
    await expect(d.createdFits('alice', 'user:alice')).rejects.toThrow(/'alice' holds 2 repositories/);
    await d.createOrg('acme', 'alice');
    const acme = await d.orgStamp('acme');
    await expect(d.createOrg('acme2', 'alice')).rejects.toThrow(/alice has created 1 organisations/);
    expect(await d.orgExists('acme2')).toBe(false);
    // The creator counts, not the owners: handing the organisation to another owner frees nothing,
    // and being made an owner takes nothing of bob's.
    await d.setMember('acme', 'bob', 'owner');
    await d.setMember('acme', 'alice', 'member');
    await expect(d.createOrg('acme2', 'alice')).rejects.toThrow(/alice has created 1/);
    await d.createOrg('bob-org', 'bob');
    // A cluster admin's create is not held; a deleted organisation no longer counts.
    await d.createOrg('beta', 'admin', { byAdmin: true });
    await d.createOrg('gamma', 'admin', { byAdmin: true });
    await d.deleteOrg('acme');
    await expect(d.createdFits('acme', acme!)).rejects.toThrow(/no user or organisation named 'acme'/);
    await d.createOrg('acme2', 'alice');
    // Creations racing past the first count: the second count takes back all but the cap.
    const wide = new Directory(store, { maxReposPerOwner: 0, maxOrgsPerUser: 2 });
    const raced = await Promise.allSettled(Array.from({ length: 10 }, (_, i) => wide.createOrg(`carol-${i}`, 'carol')));
    const made = (await store.listMeta('orgs/carol-')).length;
    expect(made).toBeLessThanOrEqual(2);
    expect(raced.filter((r) => r.status === 'fulfilled').length).toBe(made);
    const open = new Directory(store, { maxReposPerOwner: 0, maxOrgsPerUser: 0 });
    await open.roomForRepo('alice');
    await open.createOrg('acme3', 'alice');
    await store.close();
  });

  it('deleteOrg takes only that organisation: its record, grants and memberships', async () => {
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
    await deleted(store, 'acme/app');
    await d.deleteOrg('acme');
    await expect(d.deleteOrg('acme')).rejects.toThrow(/not found/);
    expect(await d.orgExists('acme')).toBe(false);
    expect([...(await d.policy('alice/x' as RepoId)).grants]).toEqual([['org:acme-labs', 'read']]);
    const bob = await d.principal((await d.user('bob'))!);
    expect([...bob.orgs]).toEqual([['acme-labs', 'member']]);
    // The name can be an organisation's again, with nothing of the old one (names are claimed
    // for good: not in another case, and not as a user's).
    await expect(d.createOrg('ACME', 'bob')).rejects.toThrow(/in case only/);
    await expect(d.addUser('acme', false)).rejects.toThrow(/is an organisation/);
    await d.createOrg('acme', 'bob');
    expect(await d.members('acme')).toEqual([{ user: 'bob', role: 'owner' }]);
    expect((await d.policy('alice/x' as RepoId)).grants.has('org:acme')).toBe(false);
    await store.close();
  });

  it('an organisation being deleted takes no member, grant or creation; one written as it went is taken back', async () => {
    const real = new SqliteStore(':memory:');
    // The store's edge: the delete's sweep of grants waits for `sweep`, one member's and one
    // grant's writes for `late` (they began before the delete and land after it).
    let sweep = (): void => undefined;
    const sweeping = new Promise<void>((r) => (sweep = r));
    let late = (): void => undefined;
    const landed = new Promise<void>((r) => (late = r));
    let inSweep = (): void => undefined;
    const sweepStarted = new Promise<void>((r) => (inSweep = r));
    const store = edge(real, {
      listMeta: async (prefix: string) => {
        if (prefix === 'grants/') {
          inSweep();
          await sweeping;
        }
        return real.listMeta(prefix);
      },
      setMeta: async (key: string, value: string) => {
        if (key === 'members/carol/acme' || key === 'grants/alice/x/org:acme') await landed;
        return real.setMeta(key, value);
      },
    });
    const d = new Directory(store);
    for (const u of ['alice', 'bob', 'carol', 'mallory']) await d.addUser(u, false);
    await d.createOrg('acme', 'alice');
    await created(real, 'alice/x');
    const lateMember = d.setMember('acme', 'carol', 'owner');
    const lateGrant = d.grant('alice/x' as RepoId, 'org:acme', 'write');
    const deleting = d.deleteOrg('acme');
    await sweepStarted;
    // While it is marked: no creation of it again, no member, no grant, no repository under it.
    await expect(d.createOrg('acme', 'mallory')).rejects.toThrow(/organisation acme is being deleted/);
    await expect(d.setMember('acme', 'bob', 'member')).rejects.toThrow(/organisation acme not found/);
    await expect(d.grant('alice/x' as RepoId, 'org:acme', 'read')).rejects.toThrow(/no organisation named 'acme'/);
    expect(await d.namespaceStamp('acme')).toBeNull();
    sweep();
    await deleting;
    expect(await d.orgExists('acme')).toBe(false);
    // The writes that began before the delete land after its sweeps, and take themselves back.
    late();
    await expect(lateMember).rejects.toThrow(/organisation acme not found/);
    await expect(lateGrant).rejects.toThrow(/no organisation named 'acme'/);
    await d.createOrg('acme', 'mallory');
    expect(await d.members('acme')).toEqual([{ user: 'mallory', role: 'owner' }]);
    expect((await d.policy('alice/x' as RepoId)).grants.size).toBe(0);
    await real.close();
  });

  it('a delete that finds a repository made after its first count gives the organisation back whole', async () => {
    const real = new SqliteStore(':memory:');
    let counts = 0;
    const store = edge(real, {
      countRepos: async (owner: string) => {
        // A member's create commits between the delete's two counts.
        if (++counts === 2) await created(real, `${owner}/late`);
        return real.countRepos(owner);
      },
    });
    const d = new Directory(store);
    for (const u of ['alice', 'bob']) await d.addUser(u, false);
    await d.createOrg('acme', 'alice');
    await d.setMember('acme', 'bob', 'member');
    const before = await d.orgStamp('acme');
    counts = 0; // the delete's own counts from here
    await expect(d.deleteOrg('acme')).rejects.toThrow(/holds 1 repositories/);
    expect(await d.orgStamp('acme')).toBe(before);
    expect(await d.members('acme')).toHaveLength(2);
    await real.close();
  });

  it('a delete cut short is finished by the next, which counts again; one that finds the record changed sweeps nothing', async () => {
    const store = new SqliteStore(':memory:');
    const d = new Directory(store);
    for (const u of ['alice', 'carol']) await d.addUser(u, false);
    await d.createOrg('x', 'alice');
    // Cut short right after its mark, with a repository made in that moment.
    const raw = (await store.getMeta('orgs/x'))!;
    const marked = JSON.stringify({ ...JSON.parse(raw), deleting: true });
    await store.setMeta('orgs/x', marked);
    await created(store, 'x/late');
    await expect(d.deleteOrg('x')).rejects.toThrow(/holds 1 repositories/);
    await deleted(store, 'x/late');
    // A second delete that read the mark and stalled: the first finishes, carol makes x again.
    const real = store;
    let stall = (): void => undefined;
    const stalled = new Promise<void>((r) => (stall = r));
    let reads = 0;
    const slow = new Directory(
      edge(real, {
        countRepos: async (owner: string) => {
          if (++reads === 1) await stalled;
          return real.countRepos(owner);
        },
      }),
    );
    const stale = slow.deleteOrg('x');
    await d.deleteOrg('x');
    await d.createOrg('x', 'carol');
    stall();
    await expect(stale).rejects.toThrow(/organisation x not found/);
    expect(await d.members('x')).toEqual([{ user: 'carol', role: 'owner' }]);
    await store.close();
  });

  it("a member's role written as a delete was refused is put back as it was, not removed", async () => {
    const real = new SqliteStore(':memory:');
    let counts = 0;
    let release = (): void => undefined;
    const held = new Promise<void>((r) => (release = r));
    let marked = (): void => undefined;
    const isMarked = new Promise<void>((r) => (marked = r));
    const store = edge(real, {
      countRepos: async (owner: string) => {
        // The delete's second count: a repository was made meanwhile; it waits for alice's write.
        if (++counts === 2) {
          await created(real, `${owner}/late`);
          marked();
          await held;
        }
        return real.countRepos(owner);
      },
      setMeta: async (key: string, value: string) => {
        // alice's write lands once the record is marked.
        if (key === 'members/alice/x' && armed) await isMarked;
        return real.setMeta(key, value);
      },
    });
    let armed = false;
    const d = new Directory(store);
    await d.addUser('alice', false);
    await d.createOrg('x', 'alice');
    const stamp = await d.orgStamp('x');
    armed = true;
    counts = 0; // the delete's own counts from here
    // alice, the only owner, sets her role as the delete begins: her second read sees the mark (404).
    const setting = d.setMember('x', 'alice', 'owner');
    const deleting = d.deleteOrg('x');
    await expect(setting).rejects.toThrow(/organisation x not found/);
    release();
    await expect(deleting).rejects.toThrow(/holds 1 repositories/);
    // The organisation stays, and alice with it (the take-back removed her before).
    expect(await d.orgStamp('x')).toBe(stamp);
    expect(await d.members('x')).toEqual([{ user: 'alice', role: 'owner' }]);
    await real.close();
  });

  it.each([
    ['remove each other', 'remove'],
    ['step down together', 'demote'],
  ])('two owners who %s at once leave one owner, not none', async (_what, how) => {
    const real = new SqliteStore(':memory:');
    // Both removals read the members (keepAnOwner) before either writes.
    let waiting = 0;
    let both = (): void => undefined;
    const bothRead = new Promise<void>((r) => (both = r));
    let armed = false;
    const store = edge(real, {
      listMeta: async (prefix: string) => {
        const got = await real.listMeta(prefix);
        if (armed && prefix === 'members/' && waiting < 2) {
          if (++waiting === 2) both();
          await bothRead;
        }
        return got;
      },
    });
    const d = new Directory(store);
    for (const u of ['alice', 'bob']) await d.addUser(u, false);
    await d.createOrg('x', 'alice');
    await d.setMember('x', 'bob', 'owner');
    armed = true;
    const results = await Promise.allSettled(
      how === 'remove'
        ? [d.removeMember('x', 'bob'), d.removeMember('x', 'alice')]
        : [d.setMember('x', 'alice', 'member'), d.setMember('x', 'bob', 'member')],
    );
    const owners = (await d.members('x')).filter((m) => m.role === 'owner');
    expect(owners.length).toBeGreaterThanOrEqual(1);
    // What was refused says why; what went through went.
    for (const r of results) if (r.status === 'rejected') expect(String(r.reason)).toMatch(/last owner of x/);
    expect(results.some((r) => r.status === 'rejected')).toBe(true);
    await real.close();
  });

  it('two owners who each step down and are then removed, all at once, leave an owner', async () => {
    // alice and bob each demote themselves; both are held just before they look again; then
    // each is removed (their role is member by then: no look); then the looks go on.
    const real = new SqliteStore(':memory:');
    let phase: 'off' | 'holding' | 'passing' = 'off';
    let demoted = 0;
    let release = (): void => undefined;
    const released = new Promise<void>((r) => (release = r));
    let bothHeld = (): void => undefined;
    const held = new Promise<void>((r) => (bothHeld = r));
    let waiting = 0;
    const store = edge(real, {
      setMeta: async (key: string, value: string) => {
        await real.setMeta(key, value);
        if (phase === 'holding' && value === 'member') demoted++;
      },
      listMeta: async (prefix: string) => {
        if (phase === 'holding' && prefix === 'members/' && demoted > 0) {
          if (++waiting === 2) bothHeld();
          await released;
        }
        return real.listMeta(prefix);
      },
    });
    const d = new Directory(store);
    for (const u of ['alice', 'bob']) await d.addUser(u, false);
    await d.createOrg('x', 'alice');
    await d.setMember('x', 'bob', 'owner');
    phase = 'holding';
    const demotions = [d.setMember('x', 'alice', 'member'), d.setMember('x', 'bob', 'member')];
    await held;
    phase = 'passing';
    const removals = await Promise.allSettled([d.removeMember('x', 'alice'), d.removeMember('x', 'bob')]);
    release();
    await Promise.allSettled(demotions);
    expect(removals.length).toBe(2);
    expect((await d.members('x')).filter((m) => m.role === 'owner').length).toBeGreaterThanOrEqual(1);
    await real.close();
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
    expect(await d.namespaceStamp('omega')).not.toBeNull();
    await store.close();
  });
});
