import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { gitOk } from '../../test/helpers/git.js';
import { eventually, quietLogger, ReplicationKit } from '../../test/helpers/replication-kit.js';
import type { RepoId } from '../domain/repo-id.js';
import type { RepoRecord } from '../store/types.js';
import { Router } from './router.js';

const REPO = 'o/r' as RepoId;

describe('Router (in process: real store, real replicas)', () => {
  let kit: ReplicationKit;
  let repo: RepoRecord;
  let router: Router;

  beforeEach(async () => {
    kit = await ReplicationKit.create({ nodes: 3 });
    await kit.coordinator('n1').createRepo(REPO);
    await eventually(async () => expect((await kit.raw.getReplicas(REPO)).filter((r) => r.state === 'in_sync')).toHaveLength(3));
    repo = (await kit.raw.getRepo(REPO))!;
    const n1 = kit.node('n1');
    const deps = {
      nodeId: 'n1',
      store: kit.store,
      storage: n1.storage,
      membership: n1.membership,
      logger: quietLogger,
      commitWaitMs: 3_000,
    };
    router = new Router(deps);
  });
  afterEach(async () => {
    await kit.close();
  });

  const stale = (node: string): Promise<boolean> => kit.raw.markReplica(REPO, node, repo.incarnation, 'stale', repo.generation + 1);
  const down = async (node: string): Promise<void> => {
    await kit.raw.unregisterNode(node);
    kit.node('n1').membership.learn(await kit.raw.allNodes());
  };
  const urlOf = (node: string): string => kit.node('n1').membership.urlOf(node)!;

  it('the local replica in sync serves', async () => {
    expect(await router.route(REPO, false)).toEqual({ kind: 'local', stale: false });
    expect(await router.route(REPO, true)).toEqual({ kind: 'local', stale: false });
  });

  it('the local replica stale: an in-sync live peer serves', async () => {
    await stale('n1');
    const route = await router.route(REPO, false);
    expect(route.kind).toBe('peer');
    await stale(route.kind === 'peer' ? route.nodeId : '');
    const other = route.kind === 'peer' && route.nodeId === 'n2' ? 'n3' : 'n2';
    expect(await router.route(REPO, false)).toMatchObject({ kind: 'peer', nodeId: other, url: urlOf(other) });
  });

  it('an in-sync peer that is down is passed over', async () => {
    await stale('n1');
    await down('n2');
    expect(await router.route(REPO, false)).toMatchObject({ kind: 'peer', nodeId: 'n3', url: urlOf('n3') });
    await down('n3');
    await expect(router.route(REPO, false)).rejects.toMatchObject({ statusCode: 503 });
  });

  it('no replica in sync: 503, for reads and writes', async () => {
    for (const n of ['n1', 'n2', 'n3']) await stale(n);
    await expect(router.route(REPO, false)).rejects.toMatchObject({
      statusCode: 503,
      message: `no in-sync replica of ${REPO} is reachable, try again`,
    });
    await expect(router.route(REPO, true)).rejects.toMatchObject({ statusCode: 503 });
  });

  it('a local replica of another incarnation on disk does not serve, whatever the store says', async () => {
    await gitOk(['config', 'replication.incarnation', 'someone-else'], { cwd: kit.node('n1').storage.repoPath(REPO) });
    expect((await router.route(REPO, false)).kind).toBe('peer');
  });

  it('reuseMs: a recent read routes again without a store read, to this replica or the peer it found in sync', async () => {
    const reads = (): number => kit.faults.count('getRepoState');
    await router.route(REPO, true);
    const before = reads();
    expect(await router.route(REPO, true, { reuseMs: 60_000 })).toEqual({ kind: 'local', stale: false });
    expect(reads()).toBe(before);
    // Without reuse the store is read (and then says n1 is stale: a peer serves).
    await stale('n1');
    expect((await router.route(REPO, true)).kind).toBe('peer');
    expect(reads()).toBe(before + 1);
    // A recent read that found a peer in sync routes to it again, without a read.
    expect((await router.route(REPO, true, { reuseMs: 60_000 })).kind).toBe('peer');
    expect(reads()).toBe(before + 1);
    // A read older than reuseMs is read again.
    await new Promise((r) => setTimeout(r, 5));
    expect((await router.route(REPO, true, { reuseMs: 1 })).kind).toBe('peer');
    expect(reads()).toBe(before + 2);
  });

  it('an unknown repo is a 404', async () => {
    await expect(router.route('o/none', false)).rejects.toMatchObject({ statusCode: 404 });
  });

  it('the store unreachable: reads served from the last state seen, flagged stale; writes fail closed', async () => {
    await router.route(REPO, false);
    kit.faults.set('getRepoState', 'fail');
    expect(await router.route(REPO, false)).toEqual({ kind: 'local', stale: true });
    await expect(router.route(REPO, true)).rejects.toThrow(/store unreachable/);
    await expect(router.route('o/never-seen', false)).rejects.toThrow(/store unreachable/);
  });

  it('forgets repos a full listing no longer has, and only those', async () => {
    expect(router.replicaSetOf(REPO)).toBeUndefined();
    await router.route(REPO, false);
    expect(router.remembered).toBe(1);
    // The replica set the route read, for the push's coordinator (staging its pack ahead).
    expect(router.replicaSetOf(REPO)).toEqual(repo.replicas);
    router.forgetAllBut(new Set([REPO]));
    expect(router.remembered).toBe(1);
    router.forgetAllBut(new Set());
    expect(router.remembered).toBe(0);
    expect(router.replicaSetOf(REPO)).toBeUndefined();
    // Nothing left to serve from during an outage.
    kit.faults.set('getRepoState', 'fail');
    await expect(router.route(REPO, false)).rejects.toThrow(/store unreachable/);
  });

  it('between a decision and its first confirmation, a read waits for the confirmation rather than failing', async () => {
    // A push decided (generation 1), no replica confirmed yet: every replica is one behind.
    const lock = (await kit.raw.acquireLock(REPO, 'n9', 60_000))!;
    const d = await kit.raw.commitPush({
      txnId: 't1',
      repoId: REPO,
      coordinator: 'n9',
      incarnation: repo.incarnation,
      baseGeneration: 0,
      fencingToken: lock.token,
      newChecksum: 'c1',
    });
    expect(d.decision).toBe('commit');
    const reads = kit.faults.count('getRepoState');
    const routed = router.route(REPO, false);
    // Once the router has seen no replica in sync, one confirms.
    await eventually(() => expect(kit.faults.count('getRepoState')).toBeGreaterThan(reads));
    await kit.raw.confirmReplica({ repoId: REPO, nodeId: 'n3', incarnation: repo.incarnation, generation: 1, checksum: 'c1' });
    expect(await routed).toMatchObject({ kind: 'peer', nodeId: 'n3', url: urlOf('n3') });
  });

  it('a request routed here by a peer waits for this replica to confirm, and gives up after the wait', async () => {
    // A push decided (generation 1) and confirmed by n2: n1 is one behind, still confirming.
    const lock = (await kit.raw.acquireLock(REPO, 'n9', 60_000))!;
    await kit.raw.commitPush({
      txnId: 't2',
      repoId: REPO,
      coordinator: 'n9',
      incarnation: repo.incarnation,
      baseGeneration: 0,
      fencingToken: lock.token,
      newChecksum: 'c1',
    });
    await kit.raw.confirmReplica({ repoId: REPO, nodeId: 'n2', incarnation: repo.incarnation, generation: 1, checksum: 'c1' });
    expect((await router.route(REPO, false)).kind).toBe('peer');
    const waiting = router.waitLocal(REPO, false);
    const reads = kit.faults.count('getRepoState');
    await eventually(() => expect(kit.faults.count('getRepoState')).toBeGreaterThan(reads));
    await kit.raw.confirmReplica({ repoId: REPO, nodeId: 'n1', incarnation: repo.incarnation, generation: 1, checksum: 'c1' });
    expect(await waiting).toBe(true);
    // n3 never confirms: a router on n3 gives up after commitWaitMs.
    const n3 = kit.node('n3');
    const onN3 = new Router({
      nodeId: 'n3',
      store: kit.store,
      storage: n3.storage,
      membership: n3.membership,
      logger: quietLogger,
      commitWaitMs: 300,
    });
    expect(await onN3.waitLocal(REPO, false)).toBe(false);
  });
});
