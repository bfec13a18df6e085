import { readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { gitOk, refsOf, workRepo } from '../../test/helpers/git.js';
import { answers, eventually, FakeExchange, Gate, receivePack, ReplicationKit, type Script } from '../../test/helpers/replication-kit.js';
import { ZERO_OID } from '../domain/ref-name.js';
import type { RepoId } from '../domain/repo-id.js';
import { pickDefaultBranch, PREPARES_IN_FLIGHT_MAX, type Coordinator, type PushContext } from './coordinator.js';

const Z0 = '0'.repeat(40);
const A = 'a'.repeat(40);
const create = (ref: string): { ref: string; oldOid: string; newOid: string } => ({ ref, oldOid: Z0, newOid: A });

describe('pickDefaultBranch', () => {
  const none = new Map<string, string>();
  it.each<[string, string | null, ReadonlyMap<string, string>, string[], string | null]>([
    ['HEAD names an existing branch', 'refs/heads/main', new Map([['refs/heads/main', A]]), ['refs/heads/x'], null],
    ["the push creates HEAD's branch", 'refs/heads/main', none, ['refs/heads/x', 'refs/heads/main'], null],
    ['unborn HEAD, master pushed', 'refs/heads/main', none, ['refs/heads/master'], 'refs/heads/master'],
    ['unborn HEAD, main wins over master', 'refs/heads/trunk', none, ['refs/heads/master', 'refs/heads/main'], 'refs/heads/main'],
    ['unborn HEAD, master wins over others', 'refs/heads/main', none, ['refs/heads/dev', 'refs/heads/master'], 'refs/heads/master'],
    ['unborn HEAD, else the first branch', 'refs/heads/main', none, ['refs/heads/dev', 'refs/heads/rel'], 'refs/heads/dev'],
    ['only tags', 'refs/heads/main', none, ['refs/tags/v1'], null],
    ['detached or missing HEAD', null, none, ['refs/heads/dev'], 'refs/heads/dev'],
  ])('%s', (_n, head, current, refs, expected) => {
    expect(pickDefaultBranch(head, current, refs.map(create))).toBe(expected);
  });
  it('ignores deletes', () => {
    expect(pickDefaultBranch('refs/heads/main', none, [{ ref: 'refs/heads/x', oldOid: A, newOid: Z0 }])).toBeNull();
  });
});

const Z = ZERO_OID;
const REPO = 'o/r' as RepoId;

describe('Coordinator (in process: real store and git, scripted peers)', () => {
  let kit: ReplicationKit;
  beforeEach(async () => {
    kit = await ReplicationKit.create({ nodes: 3 });
  });
  afterEach(async () => {
    await kit.close();
  });

  const txnOf = (node: string): string => kit.peers.callsTo(node, 'prepare').at(-1)!.txnId;
  const stateOn = async (node: string): Promise<string | undefined> =>
    (await kit.raw.getReplicas(REPO)).find((r) => r.nodeId === node)?.state;

  describe('createRepo', () => {
    it('all prepare and commit: the repo is in the store and on every replica', async () => {
      const res = await kit.coordinator('n1').createRepo(REPO);
      expect(res).toMatchObject({
        created: true,
        replicated: true,
        write_quorum: 2,
        replicas: expect.arrayContaining(['n1', 'n2', 'n3']) as unknown,
      });
      const repo = (await kit.raw.getRepo(REPO))!;
      expect(repo.generation).toBe(0);
      expect((await kit.raw.getTxn(txnOf('n2')))?.decision).toBe('commit');
      await eventually(async () => {
        for (const n of kit.nodes) expect(await n.storage.incarnationOf(REPO)).toBe(repo.incarnation);
        expect((await kit.raw.getReplicas(REPO)).map((r) => r.state)).toEqual(['in_sync', 'in_sync', 'in_sync']);
      });
    });

    it('one peer refuses: W=2 of 3 still commit; the refusing peer gets no commit and is marked missing', async () => {
      kit.peers.script('n3', 'prepare', answers.refuse('stale'));
      const res = await kit.coordinator('n1').createRepo(REPO);
      expect(res.peers_confirmed).toBe(1);
      expect(kit.peers.callsTo('n3', 'commit')).toHaveLength(0);
      await eventually(async () => expect(await stateOn('n3')).toBe('missing'));
      expect(await kit.node('n3').storage.exists(REPO)).toBe(false);
    });

    it('quorum not reached: 503 with the counts, nothing created anywhere, nothing left locked', async () => {
      kit.peers.script('n2', 'prepare', answers.refuse('failed'));
      kit.peers.script('n3', 'prepare', answers.unreachable);
      await expect(kit.coordinator('n1').createRepo(REPO)).rejects.toMatchObject({
        statusCode: 503,
        message: 'replication quorum not reached: 1 of 3 replicas prepared, 2 required',
      });
      expect(await kit.raw.getRepo(REPO)).toBeNull();
      expect((await kit.raw.getTxn(txnOf('n2')))?.decision).toBe('abort');
      expect(kit.node('n1').log.get(txnOf('n2'))?.state).toBe('aborted');
      expect(kit.node('n1').activity.runningOn(REPO)).toEqual([]);
      expect(await readdir(kit.node('n1').storage.tmpDir)).toEqual([]);
      expect(await kit.raw.getLock(REPO)).toBeNull();
      // A peer that never prepared has nothing to abort.
      expect(kit.peers.callsTo('n2', 'abort')).toHaveLength(0);
    });

    it('a peer that prepares after the time-out is told to abort', async () => {
      const gate = new Gate();
      kit.peers.script('n2', 'prepare', answers.refuse('failed'));
      kit.peers.script('n3', 'prepare', gate.held);
      await expect(kit.coordinator('n1', { prepareTimeoutMs: 200 }).createRepo(REPO)).rejects.toMatchObject({ statusCode: 503 });
      expect(kit.peers.callsTo('n3', 'abort')).toHaveLength(0);
      gate.release();
      await eventually(() => expect(kit.peers.callsTo('n3', 'abort')).toHaveLength(1));
      await eventually(() => expect(kit.node('n3').log.get(txnOf('n3'))?.state).toBe('aborted'));
      expect(await kit.node('n3').storage.exists(REPO)).toBe(false);
    });

    it('W prepared is enough: a slow peer does not hold the decision, and is committed once it prepares', async () => {
      const gate = new Gate();
      kit.peers.script('n3', 'prepare', gate.held);
      const res = await kit.coordinator('n1').createRepo(REPO);
      expect(res.peers_confirmed).toBe(1);
      expect(kit.peers.callsTo('n3', 'commit')).toHaveLength(0);
      gate.release();
      await eventually(async () => expect(await stateOn('n3')).toBe('in_sync'));
    });

    it('the decision write fails before it lands: abort is written, the create refused, every prepared replica aborted', async () => {
      kit.faults.set('commitCreate', 'fail');
      await expect(kit.coordinator('n1').createRepo(REPO)).rejects.toMatchObject({
        statusCode: 503,
        message: expect.stringContaining('the decision could not be written') as unknown,
      });
      kit.faults.clear();
      expect(await kit.raw.getRepo(REPO)).toBeNull();
      expect((await kit.raw.getTxn(txnOf('n2')))?.decision).toBe('abort');
      await eventually(() => {
        for (const n of kit.nodes) expect(n.log.get(txnOf('n2'))?.state).toBe('aborted');
      });
    });

    it('the decision lands but its answer is lost: the commit is read back and carried out', async () => {
      kit.faults.set('commitCreate', 'lose');
      const res = await kit.coordinator('n1').createRepo(REPO);
      kit.faults.clear();
      expect(res.created).toBe(true);
      expect((await kit.raw.getTxn(txnOf('n2')))?.decision).toBe('commit');
      await eventually(() => expect(kit.peers.callsTo('n2', 'commit')).toHaveLength(1));
    });

    it('fewer than W commits confirmed: 503 (outcome not known to be replicated), the decision stands', async () => {
      kit.peers.script('n2', 'commit', answers.lost);
      kit.peers.script('n3', 'commit', answers.unreachable);
      await expect(kit.coordinator('n1').createRepo(REPO)).rejects.toMatchObject({
        statusCode: 503,
        message: expect.stringContaining('created but only 1 replicas confirmed') as unknown,
      });
      expect((await kit.raw.getRepo(REPO))?.generation).toBe(0);
      // n2 applied the commit (its answer was lost); n3 never heard of it: both left to repair.
      expect(await kit.node('n2').storage.exists(REPO)).toBe(true);
      expect(await kit.node('n3').storage.exists(REPO)).toBe(false);
      await eventually(async () => expect(await stateOn('n3')).toBe('missing'));
    });
  });

  describe('handlePush', () => {
    let work: string;
    let tip: string;
    /** allInSync waits until every replica of the repo is recorded in sync (the last commits confirmed). */
    const allInSync = (): Promise<void> =>
      eventually(async () => expect((await kit.raw.getReplicas(REPO)).filter((r) => r.state === 'in_sync')).toHaveLength(3));
    beforeEach(async () => {
      await kit.coordinator('n1').createRepo(REPO);
      await allInSync();
      work = await workRepo();
      tip = (await gitOk(['rev-parse', 'HEAD'], { cwd: work })).trim();
      await receivePack(kit, 'n1', REPO, work, tip, 4242);
    });
    afterEach(async () => {
      await rm(work, { recursive: true, force: true });
    });

    /**
     * push hands a push to the coordinator as the route does. receive-pack "runs" until
     * `exited` resolves (by default never: the tests reuse one received pack, whose .keep the
     * coordinator removes once receive-pack has exited).
     */
    const push = async (
      coordinator: Coordinator,
      ex: FakeExchange,
      pid = 4242,
      exited: Promise<readonly [number | null, string | null]> = new Promise(() => undefined),
      extra: Partial<PushContext> = {},
    ): Promise<void> => {
      await coordinator.handlePush(ex.asExchange, { repoId: REPO, receivePackPid: pid, abandon: () => undefined, exited, ...extra });
    };

    it('a push commits on every replica: refs and checksums match the store, the pack shipped to peers', async () => {
      const ex = new FakeExchange([[Z, tip, 'refs/heads/main']]);
      await push(kit.coordinator('n1'), ex);
      expect(ex.results?.get('refs/heads/main')).toEqual({ ok: true });
      const repo = (await kit.raw.getRepo(REPO))!;
      expect(repo.generation).toBe(1);
      expect(kit.peers.callsTo('n2', 'prepare').at(-1)?.withPack).toBe(true);
      await eventually(async () => {
        for (const n of kit.nodes) expect(await n.storage.checksum(REPO)).toBe(repo.checksum);
      });
      expect(await refsOf(kit.node('n3').storage.repoPath(REPO))).toBe(`${tip} refs/heads/main\n`);
    });

    it('reads the refs (for-each-ref) only when neither its last push nor a push it committed since left the repo at the generation found under the lock', async () => {
      const [c1, c2] = [kit.coordinator('n1'), kit.coordinator('n2')];
      const reads = { n1: vi.spyOn(kit.node('n1').storage, 'readRefs'), n2: vi.spyOn(kit.node('n2').storage, 'readRefs') };
      const first = new FakeExchange([[Z, tip, 'refs/heads/main']]);
      await push(c1, first);
      expect(first.results?.get('refs/heads/main')).toEqual({ ok: true });
      expect(reads.n1).toHaveBeenCalledTimes(1);
      // The same node's next push starts from the refs its last one left: no read.
      const second = new FakeExchange([
        [Z, tip, 'refs/heads/b'],
        [Z, tip, 'refs/heads/main'],
      ]);
      await push(c1, second);
      expect(second.results?.get('refs/heads/b')).toEqual({ ok: true });
      expect(second.results?.get('refs/heads/main')).toMatchObject({ ok: false, reason: 'already exists' });
      expect(reads.n1).toHaveBeenCalledTimes(1);
      // Another node's push moves the repo on; n1 committed it as a participant, so its next push
      // starts from its refs carried over that push: no read, and it sees the push's change.
      await allInSync();
      await receivePack(kit, 'n2', REPO, work, tip, 4343);
      const third = new FakeExchange([[tip, Z, 'refs/heads/b']]);
      await push(c2, third, 4343);
      expect(third.results?.get('refs/heads/b')).toEqual({ ok: true });
      expect(reads.n2).toHaveBeenCalledTimes(1);
      await allInSync();
      const fourth = new FakeExchange([
        [Z, tip, 'refs/heads/b'],
        [tip, tip, 'refs/heads/gone'],
      ]);
      await push(c1, fourth);
      expect(reads.n1).toHaveBeenCalledTimes(1);
      expect(fourth.results?.get('refs/heads/b')).toEqual({ ok: true });
      expect(fourth.results?.get('refs/heads/gone')).toMatchObject({ ok: false });
      // Commits that do not follow on from the remembered generation and incarnation (a late or
      // repeated one, another incarnation's) leave the remembered refs alone.
      const at4 = (await kit.raw.getRepo(REPO))!;
      const bogus = [{ ref: 'refs/heads/b', oldOid: tip, newOid: Z }];
      c1.advanceKnownRefs({ repoId: REPO, incarnation: at4.incarnation, baseGeneration: at4.generation - 1, updates: bogus });
      c1.advanceKnownRefs({ repoId: REPO, incarnation: 'another', baseGeneration: at4.generation, updates: bogus });
      const again = new FakeExchange([[Z, tip, 'refs/heads/b']]);
      await push(c1, again);
      expect(reads.n1).toHaveBeenCalledTimes(1);
      expect(again.results?.get('refs/heads/b')).toMatchObject({ ok: false, reason: 'already exists' });
      // A push refused whole changed nothing: the refs are still remembered.
      const refusedAgain = new FakeExchange([[Z, tip, 'refs/heads/main']]);
      await push(c1, refusedAgain);
      expect(reads.n1).toHaveBeenCalledTimes(1);
      expect(refusedAgain.results?.get('refs/heads/main')).toMatchObject({ ok: false, reason: 'already exists' });
      // A push c1 is not told of (n1's commits now go to another Coordinator, as after a restart
      // of its refs' memory) leaves c1's refs a generation old: its next push reads again, and sees it.
      kit.coordinator('n1');
      await allInSync();
      const fifth = new FakeExchange([[Z, tip, 'refs/heads/c']]);
      await push(c2, fifth, 4343);
      expect(fifth.results?.get('refs/heads/c')).toEqual({ ok: true });
      await allInSync();
      const sixth = new FakeExchange([
        [Z, tip, 'refs/heads/d'],
        [Z, tip, 'refs/heads/c'],
      ]);
      await push(c1, sixth);
      expect(reads.n1).toHaveBeenCalledTimes(2);
      expect(sixth.results?.get('refs/heads/d')).toEqual({ ok: true });
      expect(sixth.results?.get('refs/heads/c')).toMatchObject({ ok: false, reason: 'already exists' });
      const repo = (await kit.raw.getRepo(REPO))!;
      expect(repo.generation).toBe(6);
      await eventually(async () => {
        for (const n of kit.nodes) expect(await n.storage.checksum(REPO)).toBe(repo.checksum);
      });
      expect(await refsOf(kit.node('n3').storage.repoPath(REPO))).toBe(
        `${tip} refs/heads/b\n${tip} refs/heads/c\n${tip} refs/heads/d\n${tip} refs/heads/main\n`,
      );
    });

    it('peers read in sync under the lock are told so and do not read their records again; a peer read stale is not asked', async () => {
      // n3's record says stale (its copy on disk is fine): the coordinator's read under the lock sees it.
      const before = (await kit.raw.getRepo(REPO))!;
      await kit.raw.markReplica(REPO, 'n3', before.incarnation, 'stale', before.generation + 1);
      const replicaReads = (): number =>
        kit.faults.count('getReplicas') + kit.faults.count('getRepoState') + kit.faults.count('acquireLockAndRead');
      const reads = replicaReads();
      const marks = kit.faults.count('markReplica');
      const calls = kit.peers.calls.length;
      const ex = new FakeExchange([[Z, tip, 'refs/heads/main']]);
      await push(kit.coordinator('n1'), ex);
      expect(ex.results?.get('refs/heads/main')).toEqual({ ok: true });
      expect(kit.peers.callsTo('n2', 'prepare').at(-1)?.replicaChecked).toBe(true);
      // n3 would refuse (it checks that same record): it is neither sent the pack nor asked, nor
      // marked stale again (a store write on every push while it was behind).
      expect(kit.peers.calls.slice(calls).filter((c) => c.node === 'n3')).toEqual([]);
      expect(kit.faults.count('markReplica')).toBe(marks);
      // One read by the coordinator (with the lock and the repo record); none by n1's own participant or n2.
      expect(replicaReads() - reads).toBe(1);
      const replicas = await kit.raw.getReplicas(REPO);
      expect(replicas.find((r) => r.nodeId === 'n2')).toMatchObject({ generation: 1, state: 'in_sync' });
      expect(replicas.find((r) => r.nodeId === 'n3')).toMatchObject({ generation: 0, state: 'stale' });
      // Nor is one being repaired; with it, a refusal by n2 is a quorum failure that names both.
      await kit.raw.markReplica(REPO, 'n3', before.incarnation, 'repairing', 1);
      kit.peers.script('n2', 'prepare', answers.refuse('failed', 'no space left on device'));
      const again = new FakeExchange([[Z, tip, 'refs/heads/x']]);
      await push(kit.coordinator('n1'), again);
      expect(again.results?.get('refs/heads/x')).toMatchObject({
        ok: false,
        reason: expect.stringContaining('1 of 3 replicas prepared') as unknown,
      });
      expect(kit.peers.calls.slice(calls).filter((c) => c.node === 'n3')).toEqual([]);
    });

    it('the replicas that committed are confirmed in one store write with the lock release and the audit record; a late one on its own', async () => {
      const gate = new Gate();
      kit.peers.script('n3', 'commit', gate.held);
      const writes = (): Record<string, number> =>
        Object.fromEntries(
          ['confirmReplica', 'confirmReplicas', 'releaseLock', 'setMeta'].map((op) => [op, kit.faults.count(op as never)]),
        );
      const before = writes();
      const ex = new FakeExchange([[Z, tip, 'refs/heads/main']]);
      await kit.coordinator('n1').handlePush(ex.asExchange, {
        repoId: REPO,
        receivePackPid: 4242,
        abandon: () => undefined,
        exited: new Promise(() => undefined),
        audit: (txn, refs) => ({ action: 'push', user: 'alice', token: 't', repo: REPO, refs, txn }),
      });
      expect(ex.results?.get('refs/heads/main')).toEqual({ ok: true });
      // Acknowledged with n1 and n2 confirmed and the lock free, while n3 has not committed yet.
      const repo = (await kit.raw.getRepo(REPO))!;
      expect((await kit.raw.getReplicas(REPO)).map((r) => [r.nodeId, r.generation])).toEqual([
        ['n1', 1],
        ['n2', 1],
        ['n3', 0],
      ]);
      expect(await kit.raw.getLock(REPO)).toBeNull();
      const audit = (await kit.raw.listMeta('audit/')).map((m) => JSON.parse(m.value) as { user: string; refs: string[] });
      expect(audit).toEqual([expect.objectContaining({ user: 'alice', refs: ['refs/heads/main'] })]);
      const after = writes();
      expect(after).toEqual({ ...before, confirmReplicas: before.confirmReplicas! + 1 });
      gate.release();
      await eventually(async () =>
        expect((await kit.raw.getReplicas(REPO)).find((r) => r.nodeId === 'n3')).toMatchObject({
          generation: 1,
          checksum: repo.checksum,
          state: 'in_sync',
        }),
      );
      expect(writes()).toEqual({ ...after, confirmReplica: after.confirmReplica! + 1 });
    });

    it('a coordinator whose replica trails several pushes, their commits on the way, waits for them instead of repairing', async () => {
      // n1 is the straggler of two pushes through n2 (its prepares held): its record says in
      // sync two generations back. A push through n1 then must not start a repair (which would
      // refuse those prepares as "being repaired" and have n1 marked stale): it waits while the
      // record keeps moving, as for a replica one generation back.
      await receivePack(kit, 'n2', REPO, work, tip, 4343);
      const gate = new Gate();
      kit.peers.script('n1', 'prepare', gate.held);
      for (const ref of ['refs/heads/main', 'refs/heads/b']) {
        const ex = new FakeExchange([[Z, tip, ref]]);
        await push(kit.coordinator('n2'), ex, 4343);
        expect(ex.results?.get(ref)).toEqual({ ok: true });
      }
      expect((await kit.raw.getRepo(REPO))!.generation).toBe(2);
      expect((await kit.raw.getReplicas(REPO)).find((r) => r.nodeId === 'n1')).toMatchObject({ state: 'in_sync', generation: 0 });
      const catchUps: string[] = [];
      const c1 = kit.coordinator('n1', { commitWaitMs: 5_000 }, async (id) => {
        catchUps.push(id);
        return false;
      });
      setTimeout(() => gate.release(), 300);
      const ex = new FakeExchange([[Z, tip, 'refs/heads/c']]);
      await push(c1, ex);
      expect(ex.results?.get('refs/heads/c')).toEqual({ ok: true });
      expect(catchUps).toEqual([]);
      expect((await kit.raw.getRepo(REPO))!.generation).toBe(3);
      await eventually(async () =>
        expect((await kit.raw.getReplicas(REPO)).map((r) => r.state)).toEqual(['in_sync', 'in_sync', 'in_sync']),
      );
    });

    it(`a peer with ${PREPARES_IN_FLIGHT_MAX} prepares of the repo unanswered, the oldest past commitWaitMs, is not asked again: it misses the push and is marked stale`, async () => {
      // A stopped peer (SIGSTOP) answers nothing and refuses nothing; its record reads in sync
      // until one of its answers comes back, so every push asked it and its backlog grew with
      // every push until it ran again.
      const gate = new Gate();
      kit.peers.script('n3', 'prepare', gate.held);
      const base = { n2: kit.peers.callsTo('n2', 'prepare').length, n3: kit.peers.callsTo('n3', 'prepare').length };
      const asked = (node: 'n2' | 'n3'): number => kit.peers.callsTo(node, 'prepare').length - base[node];
      let n = 0;
      const pushThrough = async (c: Coordinator): Promise<void> => {
        const ref = `refs/heads/b${n++}`;
        const ex = new FakeExchange([[Z, tip, ref]]);
        await push(c, ex);
        expect(ex.results?.get(ref)).toEqual({ ok: true });
      };
      // Many unanswered, but the oldest not yet commitWaitMs old (a peer still indexing a big
      // pack while small pushes follow): still asked.
      const patient = kit.coordinator('n1', { commitWaitMs: 60_000 });
      for (let i = 0; i <= PREPARES_IN_FLIGHT_MAX; i++) await pushThrough(patient);
      expect(asked('n3')).toBe(PREPARES_IN_FLIGHT_MAX + 1);
      // Another coordinator (its own count) builds a backlog of as many, then lets the oldest pass
      // its commitWaitMs: not asked.
      const c1 = kit.coordinator('n1', { commitWaitMs: 300 });
      for (let i = 0; i < PREPARES_IN_FLIGHT_MAX; i++) await pushThrough(c1);
      expect(asked('n3')).toBe(2 * PREPARES_IN_FLIGHT_MAX + 1);
      expect(await stateOn('n3')).toBe('in_sync');
      await new Promise((r) => setTimeout(r, 350));
      await pushThrough(c1);
      expect(asked('n3')).toBe(2 * PREPARES_IN_FLIGHT_MAX + 1);
      await eventually(async () => expect(await stateOn('n3')).toBe('stale'));
      // Another peer's backlog is its own: n2 is still asked.
      expect(asked('n2')).toBe(2 * PREPARES_IN_FLIGHT_MAX + 2);
      gate.release();
    });

    it("a straggler's prepare still reading the pack keeps a repack off the coordinator's replica until it settles", async () => {
      // The push is answered with n1 and n2 while n3's prepare is held: the pack it carries may
      // still be read here after receive-pack's .keep is gone, so no repack may roll it up.
      const gate = new Gate();
      kit.peers.script('n3', 'prepare', gate.held);
      const ex = new FakeExchange([[Z, tip, 'refs/heads/main']]);
      await push(kit.coordinator('n1'), ex);
      expect(ex.results?.get('refs/heads/main')).toEqual({ ok: true });
      const activity = kit.node('n1').activity;
      expect(activity.runningOn(REPO)).toContain('ship');
      expect(activity.tryBegin(REPO, 'repack')).toBeNull();
      gate.release();
      await eventually(async () => expect((await kit.raw.getReplicas(REPO)).find((r) => r.nodeId === 'n3')?.generation).toBe(1));
      await eventually(() => expect(activity.runningOn(REPO)).not.toContain('ship'));
      const repack = activity.tryBegin(REPO, 'repack');
      expect(repack).not.toBeNull();
      repack?.end();
    });

    it('replicas that commit moments after the W-th join its confirmation write: one write confirms all three', async () => {
      // Every replica commits at once; the peers' answers come back 300 and 305 ms after their
      // commits were sent: the W-th (n2's, with n1's own) is the 300 ms one, and the coordinator
      // then waits as long again as that took, at most 20 ms, for the third. (The answers held
      // by timers, not the real commits racing: under load the third real commit could take
      // longer than the grace, and this failed. n3's timer expires before the grace's, and Node
      // runs timers in the order they expire.)
      const answerAt =
        (ms: number): Script =>
        async (_c, deliver) => {
          const due = Date.now() + ms;
          const a = await deliver();
          await new Promise((r) => setTimeout(r, Math.max(0, due - Date.now())));
          return a;
        };
      kit.peers.script('n2', 'commit', answerAt(300));
      kit.peers.script('n3', 'commit', answerAt(305));
      const writes = (): number[] => (['confirmReplica', 'confirmReplicas'] as const).map((op) => kit.faults.count(op));
      const before = writes();
      const ex = new FakeExchange([[Z, tip, 'refs/heads/main']]);
      await push(kit.coordinator('n1'), ex);
      expect(ex.results?.get('refs/heads/main')).toEqual({ ok: true });
      expect((await kit.raw.getReplicas(REPO)).map((r) => [r.nodeId, r.generation, r.state])).toEqual([
        ['n1', 1, 'in_sync'],
        ['n2', 1, 'in_sync'],
        ['n3', 1, 'in_sync'],
      ]);
      expect(writes()).toEqual([before[0], before[1]! + 1]);
    });

    it('quorum not reached: ng with the counts, no ref moves, the refs unlocked for the next push', async () => {
      kit.peers.script('n2', 'prepare', answers.refuse('failed', 'no space left on device'));
      kit.peers.script('n3', 'prepare', answers.unreachable);
      const ex = new FakeExchange([[Z, tip, 'refs/heads/main']]);
      await push(kit.coordinator('n1'), ex);
      expect(ex.results?.get('refs/heads/main')).toEqual({
        ok: false,
        reason: 'replication quorum not reached: 1 of 3 replicas prepared, 2 required',
      });
      expect((await kit.raw.getRepo(REPO))?.generation).toBe(0);
      expect(await kit.node('n1').storage.readRefs(REPO)).toEqual([]);
      expect(kit.node('n1').activity.runningOn(REPO)).toEqual([]);
      // The same push again, peers back: the local ref lock was released by the abort.
      kit.peers.script('n2', 'prepare', answers.real);
      kit.peers.script('n3', 'prepare', answers.real);
      const again = new FakeExchange([[Z, tip, 'refs/heads/main']]);
      await push(kit.coordinator('n1'), again);
      expect(again.results?.get('refs/heads/main')).toEqual({ ok: true });
    });

    it("peers refusing the pack for its content: git's reason, not a quorum count", async () => {
      kit.peers.script('n2', 'prepare', answers.refuse('failed', 'pack rejected: fatal: bad tree object'));
      kit.peers.script('n3', 'prepare', answers.refuse('failed', 'pack rejected: fatal: bad tree object'));
      const ex = new FakeExchange([[Z, tip, 'refs/heads/main']]);
      await push(kit.coordinator('n1'), ex);
      expect(ex.results?.get('refs/heads/main')).toEqual({ ok: false, reason: 'pack rejected: fatal: bad tree object (2 of 3 replicas)' });
    });

    it('committed with fewer than W confirmations: the push is abandoned, not refused, and the stragglers marked stale', async () => {
      kit.peers.script('n2', 'commit', answers.unreachable);
      kit.peers.script('n3', 'commit', answers.unreachable);
      const ex = new FakeExchange([[Z, tip, 'refs/heads/main']]);
      await push(kit.coordinator('n1'), ex, 4242, Promise.resolve([null, 'SIGKILL'] as const));
      expect(ex.abandoned).toBe(true);
      expect(ex.results).toBeNull();
      expect((await kit.raw.getRepo(REPO))?.generation).toBe(1);
      // receive-pack ended without removing its pack's .keep: the coordinator removes it.
      const packDir = join(kit.node('n1').storage.repoPath(REPO), 'objects', 'pack');
      await eventually(async () => expect((await readdir(packDir)).filter((f) => f.endsWith('.keep'))).toEqual([]));
      await eventually(async () => {
        expect(await stateOn('n2')).toBe('stale');
        expect(await stateOn('n3')).toBe('stale');
      });
    });

    it('the lock taken over while preparing (a stale fencing token): the store refuses the decision, all abort', async () => {
      kit.peers.script('n2', 'prepare', async (_c, deliver) => {
        const lock = (await kit.raw.getLock(REPO))!;
        await kit.raw.releaseLock(REPO, lock.token);
        await kit.raw.acquireLock(REPO, 'intruder', 60_000);
        return deliver();
      });
      const ex = new FakeExchange([[Z, tip, 'refs/heads/main']]);
      await push(kit.coordinator('n1'), ex);
      expect(ex.results?.get('refs/heads/main')).toMatchObject({
        ok: false,
        reason: expect.stringContaining('repository changed concurrently') as unknown,
      });
      expect((await kit.raw.getTxn(txnOf('n2')))?.decision).toBe('abort');
      expect((await kit.raw.getRepo(REPO))?.generation).toBe(0);
      await eventually(() => {
        for (const n of kit.nodes) expect(n.log.get(txnOf('n2'))?.state).toBe('aborted');
      });
      expect(await kit.node('n2').storage.readRefs(REPO)).toEqual([]);
    });

    it('an old value that does not match: fetch first, nothing replicated', async () => {
      const ex = new FakeExchange([[tip, tip, 'refs/heads/main']]);
      await push(kit.coordinator('n1'), ex);
      expect(ex.results?.get('refs/heads/main')).toEqual({ ok: false, reason: 'fetch first' });
      expect(kit.peers.callsTo('n2', 'prepare')).toHaveLength(1); // the create's only
    });

    it("a push whose client's access does not hold for the repository found under the lock is refused with the reason; another push beside it commits", async () => {
      const c = kit.coordinator('n1');
      const asked: string[] = [];
      const refused = new FakeExchange([[Z, tip, 'refs/heads/theirs']]);
      const allowed = new FakeExchange([[Z, tip, 'refs/heads/mine']]);
      const refusalFor = async (incarnation: string): Promise<string> => {
        asked.push(incarnation);
        return `repository ${REPO} not found`;
      };
      await Promise.all([
        push(c, refused, undefined, undefined, { refusalFor }),
        push(c, allowed, undefined, undefined, { refusalFor: async () => null }),
      ]);
      expect(asked).toEqual([(await kit.raw.getRepo(REPO))!.incarnation]);
      expect(refused.results?.get('refs/heads/theirs')).toEqual({ ok: false, reason: `repository ${REPO} not found` });
      expect(allowed.results?.get('refs/heads/mine')).toEqual({ ok: true });
      expect(await refsOf(kit.node('n1').storage.repoPath(REPO))).toBe(`${tip} refs/heads/mine\n`);
    });

    it('a check of access that fails (the store unreachable) refuses the push, with the reason', async () => {
      const ex = new FakeExchange([[Z, tip, 'refs/heads/main']]);
      await push(kit.coordinator('n1'), ex, undefined, undefined, { refusalFor: () => Promise.reject(new Error('store unreachable')) });
      expect(ex.results?.get('refs/heads/main')).toEqual({ ok: false, reason: 'store unreachable' });
      expect((await kit.raw.getRepo(REPO))?.generation).toBe(0);
    });

    it('a push naming more refs than maxRefsPerPush is refused whole; a ref deeper than 32 components is refused, not its delete', async () => {
      const many = new FakeExchange([1, 2, 3].map((i) => [Z, tip, `refs/heads/b${i}`] as [string, string, string]));
      await push(kit.coordinator('n1', { maxRefsPerPush: 2 }), many);
      for (const i of [1, 2, 3])
        expect(many.results?.get(`refs/heads/b${i}`)).toEqual({
          ok: false,
          reason: 'a push may update at most 2 refs (this one names 3): push in batches',
        });
      const deep = `refs/heads/${Array.from({ length: 31 }, () => 'a').join('/')}`;
      const ex = new FakeExchange([
        [Z, tip, deep],
        [Z, tip, 'refs/heads/fine'],
        [Z, Z, `${deep}/b`],
      ]);
      await push(kit.coordinator('n1'), ex);
      expect(ex.results?.get(deep)).toEqual({ ok: false, reason: 'ref name has more than 32 components' });
      // A delete of such a name is not held to the limit: it gets git's own answer (there is no such ref here).
      expect(ex.results?.get(`${deep}/b`)).toEqual({ ok: false, reason: 'no such ref' });
      expect(ex.results?.get('refs/heads/fine')).toEqual({ ok: true });
      expect((await kit.raw.getRepo(REPO))?.generation).toBe(1);
    });

    it('--atomic: one ref refused refuses them all, and nothing is replicated', async () => {
      const ex = new FakeExchange(
        [
          [Z, tip, 'refs/heads/main'],
          [Z, tip, 'refs/heads/bad..name'],
        ],
        true,
      );
      await push(kit.coordinator('n1'), ex);
      expect(ex.results?.get('refs/heads/main')).toEqual({ ok: false, reason: 'atomic push failure' });
      expect(ex.results?.get('refs/heads/bad..name')?.ok).toBe(false);
      expect(kit.peers.callsTo('n2', 'prepare')).toHaveLength(1);
      expect((await kit.raw.getRepo(REPO))?.generation).toBe(0);
    });

    it('a default-branch change committed on fewer than W replicas is an unknown outcome, not a refusal', async () => {
      await push(
        kit.coordinator('n1'),
        new FakeExchange([
          [Z, tip, 'refs/heads/main'],
          [Z, tip, 'refs/heads/dev'],
        ]),
      );
      await eventually(async () =>
        expect((await kit.raw.getReplicas(REPO)).filter((r) => r.state === 'in_sync' && r.generation === 1)).toHaveLength(3),
      );
      kit.peers.script('n2', 'commit', answers.unreachable);
      kit.peers.script('n3', 'commit', answers.unreachable);
      await expect(kit.coordinator('n1').setDefaultBranch(REPO, 'refs/heads/dev')).rejects.toMatchObject({
        statusCode: 503,
        message: expect.stringContaining('the outcome is unknown') as unknown,
      });
      expect((await kit.raw.getRepo(REPO))?.generation).toBe(2);
      expect(await kit.node('n1').storage.headTarget(REPO)).toBe('refs/heads/dev');
    });
  });
});
