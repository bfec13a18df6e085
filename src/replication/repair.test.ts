import { existsSync } from 'node:fs';
import { readdir, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { commitFile, gitOk, refsOf, workRepo } from '../../test/helpers/git.js';
import { answers, eventually, FakeExchange, quietLogger, receivePack, ReplicationKit } from '../../test/helpers/replication-kit.js';
import type { Logger } from '../domain/logger.js';
import type { RepoId } from '../domain/repo-id.js';
import { Metrics } from '../metrics.js';
import type { RepoRecord } from '../store/types.js';
import { Failpoints } from './failpoints.js';
import { Maintenance } from './maintenance.js';
import { lastLines, REPAIR_FETCH_ROUNDS, RepairWorker } from './repair.js';
import { ReplicaVerifier } from './verifier.js';

const REPO = 'o/r' as RepoId;
const Z = '0'.repeat(40);

/**
 * The repair pass, the verifier and maintenance built directly on in-process nodes: a peer's
 * replica is fetched or cloned with real git over its file URL, and the store is the real one.
 */
describe('repair, verification and maintenance (in process)', () => {
  let kit: ReplicationKit;
  let work: string;
  let tip = Z;
  let pid = 1000;

  beforeEach(async () => {
    kit = await ReplicationKit.create({ nodes: 3 });
    await kit.coordinator('n1').createRepo(REPO);
    await eventually(async () => expect((await kit.raw.getReplicas(REPO)).filter((r) => r.state === 'in_sync')).toHaveLength(3));
    work = await workRepo();
  });
  afterEach(async () => {
    await kit.close();
    await rm(work, { recursive: true, force: true });
    tip = Z;
  });

  /**
   * push commits a file in the work repo and pushes it to main through n1, every peer answering
   * as scripted, and waits until every replica but `missing` confirmed it (a commit beyond W
   * confirmations lands after the push returns).
   */
  const push = async (name: string, missing: readonly string[] = []): Promise<void> => {
    const next = tip === Z ? (await gitOk(['rev-parse', 'HEAD'], { cwd: work })).trim() : await commitFile(work, name, `${name}\n`, name);
    await receivePack(kit, 'n1', REPO, work, next, ++pid, tip === Z ? [] : [tip]);
    const ex = new FakeExchange([[tip, next, 'refs/heads/main']]);
    await kit.coordinator('n1').handlePush(ex.asExchange, { repoId: REPO, receivePackPid: pid, abandon: () => undefined });
    expect(ex.results?.get('refs/heads/main')).toEqual({ ok: true });
    tip = next;
    const generation = (await kit.raw.getRepo(REPO))!.generation;
    await eventually(async () => {
      const confirmed = (await kit.raw.getReplicas(REPO)).filter((r) => r.state === 'in_sync' && r.generation === generation);
      expect(confirmed.map((r) => r.nodeId).sort()).toEqual(kit.nodes.map((n) => n.id).filter((id) => !missing.includes(id)));
    });
  };
  const repo = async (): Promise<RepoRecord> => (await kit.raw.getRepo(REPO))!;
  const record = async (node: string) => (await kit.raw.getReplicas(REPO)).find((r) => r.nodeId === node);
  const path = (node: string): string => kit.node(node).storage.repoPath(REPO);
  const verifier = (node: string): ReplicaVerifier => {
    const n = kit.node(node);
    return new ReplicaVerifier({
      nodeId: node,
      store: kit.store,
      storage: n.storage,
      git: kit.git,
      logger: quietLogger,
      metrics: new Metrics(),
      gitTimeoutMs: 600_000,
    });
  };
  const maintenance = (node: string, repackAfterPacks = 0): Maintenance => {
    const n = kit.node(node);
    return new Maintenance({
      nodeId: node,
      store: kit.store,
      storage: n.storage,
      git: kit.git,
      logger: quietLogger,
      metrics: new Metrics(),
      activity: n.activity,
      repackAfterPacks,
      gitTimeoutMs: 600_000,
    });
  };
  const worker = (
    node: string,
    commitWaitMs = 60_000,
    metrics = new Metrics(),
    logger: Logger = quietLogger,
    failpoints = new Failpoints(undefined),
    swapLockWaitMs?: number,
  ): RepairWorker => {
    const n = kit.node(node);
    const deps = {
      nodeId: node,
      store: kit.store,
      storage: n.storage,
      git: kit.git,
      membership: n.membership,
      logger,
      metrics,
      failpoints,
      activity: n.activity,
      verifier: verifier(node),
      maintenance: maintenance(node),
      hopToken: () => 'unused-for-file-urls',
      commitWaitMs,
      gitTimeoutMs: 600_000,
      ...(swapLockWaitMs === undefined ? {} : { swapLockWaitMs }),
    };
    return new RepairWorker(deps);
  };
  /** missPush makes n3 refuse the next push's prepare: the coordinator marks it stale. */
  const missPush = async (name: string): Promise<void> => {
    kit.peers.script('n3', 'prepare', answers.refuse('stale'));
    await push(name, ['n3']);
    kit.peers.script('n3', 'prepare', answers.real);
    await eventually(async () => expect((await record('n3'))?.state).toBe('stale'));
  };
  const inode = async (node: string): Promise<number> => (await stat(path(node))).ino;

  describe('RepairWorker', () => {
    it('a replica that missed a push is fetched from an in-sync peer, in place, and confirmed', async () => {
      await push('a');
      await missPush('b');
      const before = await inode('n3');
      expect(await worker('n3').pass()).toBe(1);
      expect(await refsOf(path('n3'))).toBe(`${tip} refs/heads/main\n`);
      expect(await record('n3')).toMatchObject({ state: 'in_sync', generation: 2, checksum: (await repo()).checksum });
      expect(await inode('n3')).toBe(before);
    });

    it('a push that commits while the fetch runs: the same attempt fetches again and confirms', async () => {
      await push('a');
      await missPush('b');
      // The replica's checksum is taken after the fetch; the first time, a push lands just before.
      const storage = kit.node('n3').storage;
      const checksum = storage.checksum.bind(storage);
      let raced = false;
      vi.spyOn(storage, 'checksum').mockImplementation(async (id: string) => {
        if (!raced) {
          raced = true;
          kit.peers.script('n3', 'prepare', answers.refuse('stale'));
          await push('c', ['n3']);
        }
        return checksum(id);
      });
      expect(await worker('n3').pass()).toBe(1);
      expect(raced).toBe(true);
      expect(await refsOf(path('n3'))).toBe(`${tip} refs/heads/main\n`);
      expect(await record('n3')).toMatchObject({ state: 'in_sync', generation: 3, checksum: (await repo()).checksum });
    });

    it('pushes that outrun every fetch round: one more round under the repo write lock catches up', async () => {
      await push('a');
      await missPush('b');
      // After each of the REPAIR_FETCH_ROUNDS fetches a push lands before the replica's checksum
      // is taken: every round is raced. Before, the attempt failed (and the next ones, while the
      // pushes went on); now a last round runs holding the repo's write lock.
      const storage = kit.node('n3').storage;
      const checksum = storage.checksum.bind(storage);
      let rounds = 0;
      let holder: string | null = null;
      kit.peers.script('n3', 'prepare', answers.refuse('stale'));
      vi.spyOn(storage, 'checksum').mockImplementation(async (id: string) => {
        rounds++;
        if (rounds <= REPAIR_FETCH_ROUNDS) await push(`r${rounds}`, ['n3']);
        else holder = (await kit.raw.getLock(REPO))?.holder ?? null;
        return checksum(id);
      });
      const metrics = new Metrics();
      expect(await worker('n3', 60_000, metrics).pass()).toBe(1);
      expect(rounds).toBe(REPAIR_FETCH_ROUNDS + 1);
      expect(holder).toBe('n3');
      expect(await kit.raw.getLock(REPO)).toBeNull();
      expect(await refsOf(path('n3'))).toBe(`${tip} refs/heads/main\n`);
      expect(await record('n3')).toMatchObject({
        state: 'in_sync',
        generation: 2 + REPAIR_FETCH_ROUNDS,
        checksum: (await repo()).checksum,
      });
      expect(await metrics.registry.getSingleMetricAsString('gitrep_repair_locked_rounds_total')).toContain('outcome="caught_up"} 1');
    });

    it('a locked round that fails releases the lock: the attempt is retried, pushes go on', async () => {
      await push('a');
      await missPush('b');
      const storage = kit.node('n3').storage;
      const checksum = storage.checksum.bind(storage);
      let rounds = 0;
      kit.peers.script('n3', 'prepare', answers.refuse('stale'));
      const spy = vi.spyOn(storage, 'checksum').mockImplementation(async (id: string) => {
        if (++rounds <= REPAIR_FETCH_ROUNDS) await push(`r${rounds}`, ['n3']);
        return checksum(id);
      });
      const w = worker('n3', 60_000, new Metrics(), quietLogger, new Failpoints('repair.lockedRound=error'));
      expect(await w.pass()).toBe(0);
      expect(rounds).toBe(REPAIR_FETCH_ROUNDS);
      expect(await kit.raw.getLock(REPO)).toBeNull();
      expect((await record('n3'))?.state).not.toBe('in_sync');
      spy.mockRestore();
      await push('after', ['n3']);
    });

    it('a locked round whose fetch runs past swapLockWaitMs is killed: the lock is released, pushes go on', async () => {
      await push('a');
      await missPush('b');
      const storage = kit.node('n3').storage;
      const checksum = storage.checksum.bind(storage);
      let rounds = 0;
      kit.peers.script('n3', 'prepare', answers.refuse('stale'));
      vi.spyOn(storage, 'checksum').mockImplementation(async (id: string) => {
        if (++rounds <= REPAIR_FETCH_ROUNDS) await push(`r${rounds}`, ['n3']);
        return checksum(id);
      });
      const metrics = new Metrics();
      const w = worker('n3', 60_000, metrics, quietLogger, new Failpoints(undefined), 800);
      // The locked round's fetch hangs (its upload-pack sleeps first): the lock must not be held
      // for the hour a repair fetch may otherwise take.
      const transfers = w as unknown as { transfer(args: string[], ...rest: unknown[]): Promise<void> };
      const transfer = transfers.transfer.bind(w);
      let locked: unknown[] = [];
      const lockFile = join(path('n3'), 'refs', 'heads', 'main.lock');
      transfers.transfer = async (args, ...rest) => {
        if (rounds < REPAIR_FETCH_ROUNDS) return transfer(args, ...rest);
        locked = rest;
        // What a fetch killed inside its ref transaction leaves: every later ref update here would fail on it.
        await writeFile(lockFile, '');
        return transfer([args[0]!, '--upload-pack=sleep 600 && git-upload-pack', ...args.slice(1)], ...rest);
      };
      expect(await w.pass()).toBe(0);
      expect(locked.at(-1)).toBeGreaterThan(0);
      expect(locked.at(-1)).toBeLessThanOrEqual(800);
      expect(await metrics.registry.getSingleMetricAsString('gitrep_repair_locked_rounds_total')).toContain('outcome="failed"} 1');
      expect(await kit.raw.getLock(REPO)).toBeNull();
      expect((await record('n3'))?.state).not.toBe('in_sync');
      expect(existsSync(lockFile)).toBe(false);
      await push('after', ['n3']);
      // Once the pushes stop, a later attempt catches the replica up: nothing was left in its way.
      rounds = REPAIR_FETCH_ROUNDS * 2;
      transfers.transfer = transfer;
      await eventually(async () => {
        await w.pass();
        expect(await record('n3')).toMatchObject({ state: 'in_sync', checksum: (await repo()).checksum });
      });
    });

    it('a locked round finds no source in sync at the current generation: it is not run, the lock is released', async () => {
      await push('a');
      await missPush('b');
      const storage = kit.node('n3').storage;
      const checksum = storage.checksum.bind(storage);
      const membership = kit.node('n3').membership;
      let rounds = 0;
      kit.peers.script('n3', 'prepare', answers.refuse('stale'));
      vi.spyOn(storage, 'checksum').mockImplementation(async (id: string) => {
        if (++rounds <= REPAIR_FETCH_ROUNDS) await push(`r${rounds}`, ['n3']);
        // After the last raced round, every peer is seen down.
        if (rounds === REPAIR_FETCH_ROUNDS) vi.spyOn(membership, 'isLive').mockReturnValue(false);
        return checksum(id);
      });
      const metrics = new Metrics();
      expect(await worker('n3', 60_000, metrics).pass()).toBe(0);
      expect(rounds).toBe(REPAIR_FETCH_ROUNDS);
      expect(await metrics.registry.getSingleMetricAsString('gitrep_repair_locked_rounds_total')).toContain('outcome="no_source"} 1');
      expect(await kit.raw.getLock(REPO)).toBeNull();
      expect((await record('n3'))?.state).not.toBe('in_sync');
    });

    it('a replica that repair cannot catch up for a minute is reported at warn, with what holds it', async () => {
      await push('a');
      await missPush('b');
      const warned: Array<[unknown, string]> = [];
      const logger: Logger = { ...quietLogger, warn: (obj: unknown, msg?: string) => void warned.push([obj, msg ?? '']) };
      // A transaction holds the replica: the repair cannot start, and says nothing of it.
      const txn = kit.node('n3').activity.tryBegin(REPO, 'txn')!;
      const w = worker('n3', 60_000, new Metrics(), logger);
      const start = Date.now();
      expect(await w.pass()).toBe(0);
      expect(warned).toEqual([]);
      const clock = vi.spyOn(Date, 'now').mockReturnValue(start + 61_000);
      expect(await w.pass()).toBe(0);
      expect(warned).toEqual([
        [expect.objectContaining({ repoId: REPO, running: ['txn'] }), 'replica behind for long: repair has not caught it up'],
      ]);
      // Once per minute, not once per pass.
      expect(await w.pass()).toBe(0);
      expect(warned).toHaveLength(1);
      clock.mockRestore();
      txn.end();
      expect(await w.pass()).toBe(1);
    });

    it('after a full listing, passes read only what the change feed names', async () => {
      await push('a');
      const w = worker('n3');
      expect(await w.pass()).toBe(0);
      // A push every replica committed and confirmed: the feed's one read, which carries the
      // records, is all a pass costs; so is a pass with nothing changed.
      await push('a2');
      const reads = (): number[] => (['changesSince', 'getRepoState', 'getReplicas', 'getRepo'] as const).map((m) => kit.faults.count(m));
      const before = reads();
      expect(await w.pass()).toBe(0);
      expect(await w.pass()).toBe(0);
      expect(reads()).toEqual([before[0]! + 2, ...before.slice(1)]);
      // Listing is no longer possible: a pass that needed it would be skipped and repair nothing.
      kit.faults.set('listRepos', 'fail');
      kit.faults.set('replicasOnNode', 'fail');
      await missPush('b');
      expect(await w.pass()).toBe(1);
      expect(await record('n3')).toMatchObject({ state: 'in_sync', generation: 3, checksum: (await repo()).checksum });
      expect(await refsOf(path('n3'))).toBe(`${tip} refs/heads/main\n`);
      // The repo moved off n3: the feed names it, and n3 drops its replica.
      const r = await repo();
      expect(await kit.raw.setReplicaSet(REPO, r.incarnation, ['n1', 'n2'])).toBe(true);
      await w.pass();
      expect(await kit.node('n3').storage.incarnationOf(REPO)).toBeNull();
      expect(await kit.node('n2').storage.incarnationOf(REPO)).toBe(r.incarnation);
    });

    it('a replica confirmed after the pass listed it is left alone: no fetch, no copy', async () => {
      await push('a');
      await missPush('b');
      // The pass lists the repo with n3 behind; before the repair starts, n3 catches up (here
      // through another worker) and a new push confirms everywhere.
      const listed = await repo();
      expect(await worker('n3').pass()).toBe(1);
      await push('c');
      const metrics = new Metrics();
      expect(await worker('n3', 60_000, metrics).repair(listed.repoId)).toBe(true);
      expect((await metrics.repairs.get()).values.reduce((n, v) => n + v.value, 0)).toBe(0);
      expect(await record('n3')).toMatchObject({ state: 'in_sync', generation: 3 });
    });

    it('an empty replica is copied whole and swapped in', async () => {
      await missPush('a');
      const before = await inode('n3');
      expect(await worker('n3').pass()).toBe(1);
      expect(await refsOf(path('n3'))).toBe(`${tip} refs/heads/main\n`);
      expect(await record('n3')).toMatchObject({ state: 'in_sync', generation: 1 });
      expect(await inode('n3')).not.toBe(before);
      expect(await kit.node('n3').storage.incarnationOf(REPO)).toBe((await repo()).incarnation);
      expect(await readdir(kit.node('n3').storage.tmpDir)).toEqual([]);
    });

    it('a replica the create never reached is copied whole', async () => {
      await kit.coordinator('n1').deleteRepo(REPO);
      kit.peers.script('n3', 'prepare', answers.refuse('stale'));
      await kit.coordinator('n1').createRepo(REPO);
      await eventually(async () => expect((await record('n3'))?.state).toBe('missing'));
      expect(await kit.node('n3').storage.exists(REPO)).toBe(false);
      expect(await worker('n3').pass()).toBe(1);
      expect(await kit.node('n3').storage.incarnationOf(REPO)).toBe((await repo()).incarnation);
      expect((await record('n3'))?.state).toBe('in_sync');
    });

    it('one generation behind: left alone for the commit wait, then repaired', async () => {
      await missPush('a');
      // Confirmed one generation back, as a replica whose commit is still on its way looks.
      await kit.raw.confirmReplica({
        repoId: REPO,
        nodeId: 'n3',
        incarnation: (await repo()).incarnation,
        generation: 0,
        checksum: await kit.node('n3').storage.checksum(REPO),
      });
      expect(await worker('n3', 60_000).pass()).toBe(0);
      expect((await record('n3'))?.generation).toBe(0);
      expect(await worker('n3', 0).pass()).toBe(1);
      expect((await record('n3'))?.generation).toBe(1);
    });

    it('in sync at an older generation: left alone while its record keeps moving, repaired once it stops', async () => {
      await missPush('a');
      await missPush('b');
      const incarnation = (await repo()).incarnation;
      const checksum = await kit.node('n3').storage.checksum(REPO);
      const confirmAt = (generation: number) => kit.raw.confirmReplica({ repoId: REPO, nodeId: 'n3', incarnation, generation, checksum });
      // Two behind, as a slow replica whose commits trail a stream of pushes is recorded.
      await confirmAt(0);
      const w = worker('n3', 1_000);
      const start = Date.now();
      const clock = vi.spyOn(Date, 'now').mockReturnValue(start);
      try {
        expect(await w.pass()).toBe(0);
        clock.mockReturnValue(start + 900);
        await confirmAt(1);
        // More than the commit wait since it was first seen behind, but its record moved meanwhile.
        clock.mockReturnValue(start + 1_500);
        expect(await w.pass()).toBe(0);
        expect((await record('n3'))?.generation).toBe(1);
        // Nothing moved for longer than the commit wait: repaired.
        clock.mockReturnValue(start + 2_600);
        expect(await w.pass()).toBe(1);
      } finally {
        clock.mockRestore();
      }
      expect(await record('n3')).toMatchObject({ state: 'in_sync', generation: 2 });
    });

    it('not while a transaction runs on the replica', async () => {
      await missPush('a');
      const txn = kit.node('n3').activity.tryBegin(REPO, 'txn')!;
      const w = worker('n3');
      expect(await w.pass()).toBe(0);
      expect((await record('n3'))?.state).toBe('stale');
      txn.end();
      expect(await w.pass()).toBe(1);
    });

    it("no in-sync peer: a replica holding the store's refs confirms itself, one that does not stays behind", async () => {
      await push('a');
      const inc = (await repo()).incarnation;
      await kit.raw.markReplica(REPO, 'n3', inc, 'stale', 2);
      for (const n of ['n1', 'n2']) await kit.raw.unregisterNode(n);
      kit.node('n3').membership.learn(await kit.raw.allNodes());
      expect(await worker('n3').pass()).toBe(1);
      expect((await record('n3'))?.state).toBe('in_sync');
      await kit.raw.markReplica(REPO, 'n3', inc, 'stale', 2);
      await gitOk(['update-ref', '-d', 'refs/heads/main'], { cwd: path('n3') });
      expect(await worker('n3').pass()).toBe(0);
      expect((await record('n3'))?.state).toBe('stale');
    });
  });

  describe('ReplicaVerifier', () => {
    it('a matching replica is ok; a ref moved by hand is marked stale; lost objects are marked missing', async () => {
      await push('a');
      expect(await verifier('n1').verifyOne(REPO, true)).toBe('ok');
      await gitOk(['update-ref', '-d', 'refs/heads/main'], { cwd: path('n2') });
      expect(await verifier('n2').verifyOne(REPO, false)).toBe('stale');
      expect((await record('n2'))?.state).toBe('stale');
      expect(await verifier('n2').verifyOne(REPO, false)).toBe('not_in_sync');
      // The refs still match the store, the objects are gone: only fsck sees it.
      const packDir = join(path('n3'), 'objects', 'pack');
      for (const f of await readdir(packDir)) await rm(join(packDir, f));
      expect(await verifier('n3').verifyOne(REPO, false)).toBe('ok');
      expect(await verifier('n3').verifyOne(REPO, true)).toBe('missing');
      expect((await record('n3'))?.state).toBe('missing');
      expect(await verifier('n1').verifyOne('o/elsewhere', true)).toBe('not_here');
    });

    it('a verification pass counts what it marked', async () => {
      await push('a');
      expect(await verifier('n1').verify(true)).toBe(0);
      await gitOk(['update-ref', '-d', 'refs/heads/main'], { cwd: path('n1') });
      expect(await verifier('n1').verify()).toBe(1);
    });

    it('an fsck pass asked for while a checksum pass runs waits its turn instead of being skipped', async () => {
      await push('a');
      const packDir = join(path('n3'), 'objects', 'pack');
      for (const f of await readdir(packDir)) await rm(join(packDir, f));
      const v = verifier('n3');
      const checksums = v.verify();
      const fsck = v.verify(true);
      // One of each kind waits at most: a third ask while both are queued is a no-op.
      expect(await v.verify(true)).toBe(0);
      expect(await checksums).toBe(0);
      expect(await fsck).toBe(1);
      expect((await record('n3'))?.state).toBe('missing');
    });
  });

  describe('Maintenance', () => {
    it('drops a local replica of a repo this node does not hold, not while something runs on it, and keeps its own', async () => {
      const n1 = kit.node('n1');
      await n1.storage.initRepo(n1.storage.repoPath('o/gone'), 'old-incarnation');
      const upload = n1.activity.tryBegin('o/gone', 'upload')!;
      await maintenance('n1').collectGarbage(new Map());
      expect(await n1.storage.exists('o/gone')).toBe(true);
      upload.end();
      await maintenance('n1').collectGarbage(new Map());
      expect(await n1.storage.exists('o/gone')).toBe(false);
      expect(await n1.storage.exists(REPO)).toBe(true);
    });

    it('rolls the packs of an in-sync replica up above the limit, without changing its refs', async () => {
      await push('a');
      await push('b');
      await push('c');
      const packs = async (): Promise<number> =>
        (await readdir(join(path('n2'), 'objects', 'pack'))).filter((f) => f.endsWith('.pack')).length;
      await eventually(async () => expect(await packs()).toBe(3));
      const refs = await refsOf(path('n2'));
      for (const limit of [0, 5]) {
        const m = maintenance('n2', limit);
        m.maybeRepack(await repo());
        await m.settled();
        expect(await packs()).toBe(3);
      }
      const m = maintenance('n2', 1);
      // Handed over after others while the node is busy with those, it is still looked at.
      for (let i = 0; i < 5; i++) m.maybeRepack({ ...(await repo()), repoId: `other/r${i}` });
      m.maybeRepack(await repo());
      await m.settled();
      expect(await packs()).toBeLessThan(3);
      expect(kit.node('n2').activity.runningOn(REPO)).toEqual([]);
      expect(await refsOf(path('n2'))).toBe(refs);
      await gitOk(['fsck', '--connectivity-only', '--no-dangling'], { cwd: path('n2') });
      // Remembered while n2 holds the repo; forgotten once a listing no longer gives it to n2.
      await m.collectGarbage(new Map([[REPO, await repo()]]));
      expect(m.tracked).toBe(1);
      await m.collectGarbage(new Map([[REPO, { ...(await repo()), replicas: ['n1', 'n3'] }]]));
      expect(m.tracked).toBe(0);
    });
  });
});

describe('lastLines', () => {
  it("keeps the cause beside git's summary, without progress lines", () => {
    const stderr =
      'remote: Enumerating objects: 5, done.\nReceiving objects:  40% (2/5)\rReceiving objects: 100% (5/5), done.\n' +
      'error: inflate: data stream error (incorrect header check)\nfatal: pack has bad object at offset 12: inflate returned -3\n' +
      'fatal: fetch-pack: invalid index-pack output\n';
    expect(lastLines(stderr)).toBe(
      'error: inflate: data stream error (incorrect header check) / fatal: pack has bad object at offset 12: inflate returned -3 / fatal: fetch-pack: invalid index-pack output',
    );
    expect(lastLines('Receiving objects: 100% (5/5), done.\n')).toBe('');
  });
});
