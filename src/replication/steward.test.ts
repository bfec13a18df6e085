import { describe, expect, it } from 'vitest';
import { eventually, quietLogger, ReplicationKit } from '../../test/helpers/replication-kit.js';
import type { RepoId } from '../domain/repo-id.js';
import { DECOMMISSIONED_PREFIX, type RepoRecord, type ReplicaRecord } from '../store/types.js';
import { planReplicaSet, Steward, type PlanInput } from './steward.js';

const repo = (replicas: string[]): RepoRecord => ({
  repoId: 'o/r',
  incarnation: 'i',
  replicas,
  generation: 5,
  checksum: 'c',
  createdAt: '',
});
const rec = (nodeId: string, inSync = true): ReplicaRecord => ({
  repoId: 'o/r',
  nodeId,
  incarnation: 'i',
  generation: inSync ? 5 : 3,
  checksum: 'c',
  state: inSync ? 'in_sync' : 'stale',
  updatedAt: '',
});

function input(over: Partial<PlanInput> & { repo: RepoRecord }): PlanInput {
  return {
    replicas: over.repo.replicas.map((n) => rec(n)),
    eligible: ['n1', 'n2', 'n3', 'n4', 'n5', 'n6'],
    isLive: () => true,
    gone: () => false,
    replicationFactor: 3,
    rebalance: false,
    ...over,
  };
}

describe('planReplicaSet', () => {
  it('leaves a healthy set alone', () => {
    expect(planReplicaSet(input({ repo: repo(['n1', 'n2', 'n3']) }))).toBeNull();
  });

  it('replaces a replica on a node gone for good at once', () => {
    const plan = planReplicaSet(input({ repo: repo(['n1', 'n2', 'n3']), isLive: (n) => n !== 'n2', gone: (n) => n === 'n2' }));
    expect(plan?.removed).toEqual(['n2']);
    expect(plan?.added).toHaveLength(1);
    expect(plan?.replicas).toHaveLength(3);
    expect(plan?.replicas).not.toContain('n2');
  });

  it('keeps a dead replica when there is no node to replace it', () => {
    expect(
      planReplicaSet(
        input({ repo: repo(['n1', 'n2', 'n3']), eligible: ['n1', 'n2', 'n3'], isLive: (n) => n !== 'n2', gone: (n) => n === 'n2' }),
      ),
    ).toBeNull();
  });

  it('decommission: adds the replacement first, removes the old one only once the new one is in sync', () => {
    const eligible = ['n1', 'n2', 'n4', 'n5', 'n6'];
    const step1 = planReplicaSet(input({ repo: repo(['n1', 'n2', 'n3']), eligible, gone: (n) => n === 'n3' }));
    expect(step1?.replicas).toHaveLength(4);
    expect(step1?.replicas).toContain('n3');
    const added = step1!.added[0]!;
    const waiting = input({ repo: repo(step1!.replicas), eligible, gone: (n) => n === 'n3' });
    const notYet = planReplicaSet({ ...waiting, replicas: step1!.replicas.map((n) => rec(n, n !== added)) });
    expect(notYet).toBeNull();
    const step2 = planReplicaSet(waiting);
    expect(step2?.removed).toEqual(['n3']);
    expect(step2?.replicas.sort()).toEqual(['n1', 'n2', added].sort());
  });

  it('rebalance moves one replica at a time onto the placement over current nodes', () => {
    let set = ['n1', 'n2', 'n3'];
    for (let i = 0; i < 10; i++) {
      const plan = planReplicaSet(input({ repo: repo(set), rebalance: true }));
      if (!plan) break;
      expect(Math.abs(plan.replicas.length - set.length)).toBe(1);
      set = plan.replicas;
    }
    expect(set).toHaveLength(3);
    expect(planReplicaSet(input({ repo: repo(set), rebalance: true }))).toBeNull();
  });

  it('grows a short set up to R', () => {
    const plan = planReplicaSet(input({ repo: repo(['n1', 'n2']) }));
    expect(plan?.replicas).toHaveLength(3);
  });
});

/** stewardOn is the steward of node `id` of the kit, with R=3 and nodes replaced after a minute. */
function stewardOn(kit: ReplicationKit, id: string): Steward {
  const node = kit.node(id);
  return new Steward({
    nodeId: id,
    store: kit.store,
    membership: node.membership,
    logger: quietLogger,
    activity: node.activity,
    replicationFactor: 3,
    replaceAfterMs: 60_000,
  });
}

/** createdInSync creates a repo through n1 and waits for its three replicas to be in sync. */
async function createdInSync(kit: ReplicationKit, id: RepoId): Promise<void> {
  await kit.coordinator('n1').createRepo(id);
  await eventually(async () => expect((await kit.raw.getReplicas(id)).filter((r) => r.state === 'in_sync')).toHaveLength(3));
}

describe('Steward passes (in process: real store)', () => {
  it('changes the set of a repo whose lock two other nodes take turn after turn, waiting in its line', async () => {
    const kit = await ReplicationKit.create({ nodes: 3 });
    let stop = false;
    const churns: Promise<number>[] = [];
    try {
      const id = 'o/busy' as RepoId;
      await createdInSync(kit, id);
      const r = (await kit.raw.getRepo(id))!;
      expect(await kit.raw.setReplicaSet(id, r.incarnation, ['n1', 'n2'])).toBe(true);
      // n2 and n3 hold the repo's lock by turns, each asking again at once, as pushes of a busy
      // repo do: the lock is never free with no one in its line.
      let taken = 0;
      const churn = async (node: string): Promise<number> => {
        let held = 0;
        while (!stop) {
          const lock = await kit.node(node).activity.lock(id, 5_000);
          if (!lock) continue;
          held++;
          taken++;
          await new Promise((res) => setTimeout(res, 15));
          await lock.release();
        }
        return held;
      };
      churns.push(churn('n2'), churn('n3'));
      await eventually(async () => expect((await kit.raw.getRepo(id))!.replicas).toHaveLength(2));
      await new Promise((res) => setTimeout(res, 100));
      const steward = stewardOn(kit, 'n1');
      const before = taken;
      expect(await steward.pass()).toBe(1);
      // The premise: the others took the lock while the pass ran (it waited its turn among them).
      expect(taken - before).toBeGreaterThan(0);
      expect([...(await kit.raw.getRepo(id))!.replicas].sort()).toEqual(['n1', 'n2', 'n3']);
    } finally {
      stop = true;
      const held = await Promise.all(churns);
      // Both kept taking it meanwhile: the steward waited its turn, it did not find the lock idle.
      for (const n of held) expect(n).toBeGreaterThan(2);
      await kit.close();
    }
  });

  it('after a settled full pass, a pass reads only the repos the change feed names, and still takes their steps', async () => {
    const kit = await ReplicationKit.create({ nodes: 3 });
    try {
      const id = 'o/short' as RepoId;
      await createdInSync(kit, id);
      const steward = stewardOn(kit, 'n1');
      expect(await steward.pass()).toBe(0);
      // Listing is no longer possible: a pass that needed it would be skipped and take no step.
      kit.faults.set('listRepos', 'fail');
      const r = (await kit.raw.getRepo(id))!;
      expect(await kit.raw.setReplicaSet(id, r.incarnation, ['n1', 'n2'])).toBe(true);
      expect(await steward.pass()).toBe(1);
      expect([...(await kit.raw.getRepo(id))!.replicas].sort()).toEqual(['n1', 'n2', 'n3']);
      kit.faults.clear();
      expect(await steward.pass()).toBe(0); // a full pass after a step, which settles
      expect(await steward.pass()).toBe(0);

      // The repo's records written (its set as it was, a replica confirmed again, as a push
      // does): the pass reads the feed, which carries them, and nothing else.
      const now = (await kit.raw.getRepo(id))!;
      expect(await kit.raw.setReplicaSet(id, now.incarnation, now.replicas)).toBe(true);
      const own = (await kit.raw.getReplicas(id)).find((r) => r.nodeId === 'n1')!;
      await kit.raw.confirmReplica({
        repoId: id,
        nodeId: 'n1',
        incarnation: own.incarnation,
        generation: own.generation,
        checksum: own.checksum,
      });
      const reads = (): number[] =>
        (['changesSince', 'getRepo', 'getReplicas', 'listMeta', 'getMeta'] as const).map((m) => kit.faults.count(m));
      const before = reads();
      expect(await steward.pass()).toBe(0);
      expect(reads()).toEqual([before[0]! + 1, ...before.slice(1)]);

      // A placement setting reaches a settled steward through the feed: n3 decommissioned, its
      // replica goes (with two eligible nodes, R is 2).
      await kit.raw.setMeta(`${DECOMMISSIONED_PREFIX}n3`, new Date().toISOString());
      expect(await steward.pass()).toBe(1);
      expect([...(await kit.raw.getRepo(id))!.replicas].sort()).toEqual(['n1', 'n2']);
    } finally {
      await kit.close();
    }
  });
});
