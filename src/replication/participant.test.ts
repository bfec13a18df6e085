import { randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, open, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { commitFile, git, gitOk, workRepo } from '../../test/helpers/git.js';
import { eventually, packOf, quietLogger, ReplicationKit, type KitNode } from '../../test/helpers/replication-kit.js';
import { applyUpdatesToChecksum } from '../domain/checksum.js';
import { ZERO_OID } from '../domain/ref-name.js';
import type { RepoId } from '../domain/repo-id.js';
import { GitRunner } from '../git/runner.js';
import type { RepoRecord } from '../store/types.js';
import { RepoActivity } from './activity.js';
import { Failpoints } from './failpoints.js';
import { Participant } from './participant.js';
import type { PrepareRequest } from '../cluster/protocol.js';

const REPO = 'o/r' as RepoId;

describe('Participant (in process: real store, real git)', () => {
  let kit: ReplicationKit;
  let node: KitNode;
  let repo: RepoRecord;
  let work: string;
  let tip: string;
  let pack: Buffer;
  /** token is the fencing token of the lock the test's coordinator (`n9`) holds. */
  let token: number;

  beforeEach(async () => {
    // One node: it coordinates the create itself, then acts as a participant of pushes.
    kit = await ReplicationKit.create({ nodes: 1, resolveAfterMs: 0 });
    node = kit.node('n1');
    await kit.coordinator('n1').createRepo(REPO);
    repo = (await kit.raw.getRepo(REPO))!;
    work = await workRepo();
    tip = (await gitOk(['rev-parse', 'HEAD'], { cwd: work })).trim();
    pack = await packOf(work, tip);
    token = (await kit.raw.acquireLock(REPO, 'n9', 600_000))!.token;
  });
  afterEach(async () => {
    await kit.close();
    await rm(work, { recursive: true, force: true });
  });

  /** push is a prepare of `main` from `old` to `next` at the repo's current generation, as a coordinator sends it. */
  const push = (over: Partial<PrepareRequest> = {}, old = ZERO_OID, next = tip): PrepareRequest => {
    const updates = [{ ref: 'refs/heads/main', oldOid: old, newOid: next }];
    return {
      txnId: randomUUID(),
      repoId: REPO,
      kind: 'push',
      coordinator: 'n9',
      incarnation: repo.incarnation,
      baseGeneration: repo.generation,
      fencingToken: token,
      updates,
      newChecksum: applyUpdatesToChecksum(repo.checksum, updates),
      ...over,
    };
  };
  const stream = (b: Buffer = pack): Readable => Readable.from([b]);
  const repoPath = (): string => node.storage.repoPath(REPO);
  const refLocked = (): boolean => existsSync(join(repoPath(), 'refs/heads/main.lock'));
  const keeps = async (): Promise<string[]> => (await readdir(join(repoPath(), 'objects/pack'))).filter((f) => f.endsWith('.keep'));
  const mainRef = async (): Promise<string | undefined> =>
    (await node.storage.readRefs(REPO)).find((r) => r.name === 'refs/heads/main')?.oid;
  /** participantWith is a second participant of node n1 with its own git runner (`gitBinary`: a stand-in git), limits and copy-check listener. */
  const participantWith = (over: {
    gitBinary?: string;
    maxUploadCopies?: number;
    maxUploadCopyBytes?: number;
    stageTtlMs?: number;
    onCopyCheck?: (by: 'links' | 'rev-list') => void;
  }): Participant => {
    const { gitBinary, ...limits } = over;
    return new Participant({
      nodeId: 'n1',
      store: kit.store,
      storage: node.storage,
      git: new GitRunner({ owner: kit.dir, instance: randomUUID(), maxProcesses: 4, ...(gitBinary ? { gitBinary } : {}) }),
      log: node.log,
      logger: quietLogger,
      failpoints: new Failpoints(undefined),
      activity: new RepoActivity({ nodeId: 'n1', store: kit.store, lockTtlMs: 10_000, logger: quietLogger }),
      resolveAfterMs: 0,
      ...limits,
    });
  };
  /** decide writes the commit decision of a prepared push in the store, as its coordinator does. */
  const decide = async (req: PrepareRequest): Promise<void> => {
    const d = await kit.raw.commitPush({
      txnId: req.txnId,
      repoId: REPO,
      coordinator: 'n9',
      incarnation: repo.incarnation,
      baseGeneration: req.baseGeneration,
      fencingToken: req.fencingToken,
      newChecksum: req.newChecksum,
    });
    expect(d.decision).toBe('commit');
  };
  /** commitThrough prepares, decides and commits a push, moving the replica (and the store) one generation on. */
  const commitThrough = async (req: PrepareRequest): Promise<void> => {
    await node.participant.prepare(req, stream());
    await decide(req);
    await node.participant.commit(req.txnId);
    repo = (await kit.raw.getRepo(REPO))!;
  };

  it('prepare verifies the pack and locks the ref; commit moves it and confirms the next generation', async () => {
    const req = push();
    await node.participant.prepare(req, stream());
    expect(refLocked()).toBe(true);
    expect(await keeps()).toHaveLength(1);
    expect(await mainRef()).toBeUndefined();
    expect(node.log.get(req.txnId)?.state).toBe('prepared');
    await decide(req);
    await node.participant.commit(req.txnId);
    expect(await mainRef()).toBe(tip);
    expect(refLocked()).toBe(false);
    expect(await keeps()).toEqual([]);
    expect((await kit.raw.getReplicas(REPO))[0]).toMatchObject({ generation: 1, checksum: req.newChecksum, state: 'in_sync' });
    expect(node.activity.runningOn(REPO)).toEqual([]);
  });

  it('a base generation ahead of the replica: stale; behind it: conflict; neither leaves a lock, a pack or an activity', async () => {
    await expect(node.participant.prepare(push({ baseGeneration: 1 }), stream())).rejects.toMatchObject({ status: 'stale' });
    await commitThrough(push());
    const next = await commitFile(work, 'b.txt', 'b\n', 'second');
    const behind = push({ baseGeneration: 0 }, tip, next);
    await expect(node.participant.prepare(behind, stream(await packOf(work, next, [tip])))).rejects.toMatchObject({ status: 'conflict' });
    expect(refLocked()).toBe(false);
    expect(await keeps()).toEqual([]);
    expect(node.activity.runningOn(REPO)).toEqual([]);
    expect(node.log.get(behind.txnId)).toBeNull();
  });

  it('replicaChecked: the record the coordinator read under the lock is trusted, the copy on disk still checked', async () => {
    // The store's record says stale; a coordinator that read it in sync (replicaChecked) is believed.
    await kit.raw.markReplica(REPO, 'n1', repo.incarnation, 'stale', repo.generation + 1);
    await expect(node.participant.prepare(push(), stream())).rejects.toMatchObject({ status: 'stale' });
    const req = push({ replicaChecked: true });
    await node.participant.prepare(req, stream());
    expect(node.log.get(req.txnId)?.state).toBe('prepared');
    await node.participant.abort(req.txnId, REPO);
    await expect(node.participant.prepare(push({ replicaChecked: true, incarnation: randomUUID() }), stream())).rejects.toMatchObject({
      status: 'stale',
      message: expect.stringContaining('another incarnation') as unknown,
    });
  });

  it('one generation behind in the store, but that generation committed here (or committing): not stale', async () => {
    // The coordinator writes the confirmations of the replicas that committed by the time W did;
    // this one committed a moment later, and the next push's prepare comes before its confirmation.
    const first = push();
    await node.participant.prepare(first, stream());
    await decide(first);
    await node.participant.commit(first.txnId, { confirm: false });
    repo = (await kit.raw.getRepo(REPO))!;
    expect((await kit.raw.getReplicas(REPO))[0]).toMatchObject({ generation: 0, state: 'in_sync' });
    const second = await commitFile(work, 'b.txt', 'b\n', 'second');
    const next = push({}, tip, second);
    await node.participant.prepare(next, stream(await packOf(work, second, [tip])));
    expect(node.log.get(next.txnId)?.state).toBe('prepared');
    await decide(next);
    repo = (await kit.raw.getRepo(REPO))!;
    await kit.raw.confirmReplica({ repoId: REPO, nodeId: 'n1', incarnation: repo.incarnation, generation: 1, checksum: first.newChecksum });
    // The push of generation 2 is still prepared here when the push after it prepares: that
    // prepare waits for its commit.
    const third = await commitFile(work, 'c.txt', 'c\n', 'third');
    const after = push({}, second, third);
    let settled = false;
    const preparing = node.participant.prepare(after, stream(await packOf(work, third, [second]))).finally(() => (settled = true));
    await new Promise((r) => setTimeout(r, 150));
    expect(settled).toBe(false);
    await node.participant.commit(next.txnId, { confirm: false });
    await preparing;
    expect(node.log.get(after.txnId)?.state).toBe('prepared');
    await node.participant.abort(after.txnId, REPO);
    expect(await mainRef()).toBe(second);
  });

  it('two generations behind in the store, both pushes on their way here: waited for; with none on its way: stale', async () => {
    // A slow replica under a stream of pushes: the store still shows it at 0 while it has
    // committed the push of generation 1 (unconfirmed) and prepared the push of 2 (uncommitted)
    // when the prepare of 3 comes. Before, that prepare was refused as stale (two behind).
    const first = push();
    await node.participant.prepare(first, stream());
    await decide(first);
    await node.participant.commit(first.txnId, { confirm: false });
    repo = (await kit.raw.getRepo(REPO))!;
    const second = await commitFile(work, 'b.txt', 'b\n', 'second');
    const next = push({}, tip, second);
    await node.participant.prepare(next, stream(await packOf(work, second, [tip])));
    await decide(next);
    repo = (await kit.raw.getRepo(REPO))!;
    expect((await kit.raw.getReplicas(REPO))[0]).toMatchObject({ generation: 0, state: 'in_sync' });
    expect(repo.generation).toBe(2);
    const third = await commitFile(work, 'c.txt', 'c\n', 'third');
    const after = push({}, second, third);
    let settled = false;
    const preparing = node.participant.prepare(after, stream(await packOf(work, third, [second]))).finally(() => (settled = true));
    await new Promise((r) => setTimeout(r, 150));
    expect(settled).toBe(false);
    await node.participant.commit(next.txnId, { confirm: false });
    await preparing;
    expect(node.log.get(after.txnId)?.state).toBe('prepared');
    await node.participant.abort(after.txnId, REPO);
    expect(await mainRef()).toBe(second);
    // Nothing between the confirmed generation and the base on its way here: stale at once.
    await expect(node.participant.prepare(push({ baseGeneration: repo.generation + 1 }, second, third), stream())).rejects.toMatchObject({
      status: 'stale',
      message: expect.stringContaining('replica is at generation 0 (in_sync), behind 3') as unknown,
    });
  });

  it('a push missing from the chain up to the base: stale at once, though an earlier one is still on its way here', async () => {
    // The push of generation 1 is prepared here, that of 2 never came (aborted here, or sent
    // elsewhere only): the prepare of 3 cannot be reached by waiting, and is refused promptly.
    const first = push();
    await node.participant.prepare(first, stream());
    const third = await commitFile(work, 'c.txt', 'c\n', 'third');
    const outcome = await Promise.race([
      node.participant.prepare(push({ baseGeneration: 2 }, tip, third), stream()).then(
        () => 'prepared',
        (e: unknown) => e,
      ),
      new Promise((r) => setTimeout(() => r('still waiting'), 1_500)),
    ]);
    expect(outcome).toMatchObject({
      status: 'stale',
      message: expect.stringContaining('replica is at generation 0 (in_sync), behind 2') as unknown,
    });
    await node.participant.abort(first.txnId, REPO);
  });

  it('a replica recorded stale refuses while its pack is still arriving: the indexing stops, nothing is left', async () => {
    // A node back from a pause answers a backlog of such prepares: each indexed its whole pack
    // before its refusal, holding the replica's transactions (and its repair) back meanwhile.
    await kit.raw.markReplica(REPO, 'n1', repo.incarnation, 'stale', repo.generation + 1);
    const slow = new PassThrough();
    slow.write(pack.subarray(0, 12));
    const outcome = await Promise.race([
      node.participant.prepare(push(), slow).then(
        () => 'prepared',
        (e: unknown) => e,
      ),
      new Promise((r) => setTimeout(() => r('still indexing'), 10_000)),
    ]);
    expect(outcome).toMatchObject({ status: 'stale' });
    slow.destroy();
    expect(node.activity.runningOn(REPO)).toEqual([]);
    await eventually(async () => expect((await readdir(join(repoPath(), 'objects/pack'))).filter((f) => f.startsWith('tmp_'))).toEqual([]));
    expect(await keeps()).toEqual([]);
  });

  it('a prepare of another incarnation is stale', async () => {
    await expect(node.participant.prepare(push({ incarnation: randomUUID() }), stream())).rejects.toMatchObject({
      status: 'stale',
      message: expect.stringContaining('another incarnation') as unknown,
    });
  });

  it('a pack that does not bring the new tip is refused: missing objects', async () => {
    const other = await commitFile(work, 'c.txt', 'c\n', 'not in the pack');
    await expect(node.participant.prepare(push({}, ZERO_OID, other), stream())).rejects.toMatchObject({
      status: 'failed',
      message: expect.stringContaining('missing objects') as unknown,
    });
    expect(refLocked()).toBe(false);
    expect(await keeps()).toEqual([]);
  });

  it('a pack not of its signed hash is refused and removed, taking the links-checked mark away; a pack of that content already committed here stays', async () => {
    const packs = async (): Promise<string[]> => (await readdir(join(repoPath(), 'objects/pack'))).filter((f) => f.endsWith('.pack'));
    const marked = (): boolean => existsSync(join(repoPath(), 'gitrep-links-checked'));
    expect(marked()).toBe(true);
    // A pack this prepare wrote is removed with its .keep; its objects may have lent links to another copy meanwhile.
    await expect(node.participant.prepare(push({ packHash: 'a'.repeat(40) }), stream())).rejects.toThrow(/not the signed/);
    expect(await packs()).toEqual([]);
    expect(marked()).toBe(false);
    // The same bytes, committed (its .keep gone), then sent again under a wrong hash: the committed pack stays.
    await commitThrough(push());
    const committed = await packs();
    expect(committed).toHaveLength(1);
    const next = await commitFile(work, 'n.txt', 'n\n', 'next');
    await expect(node.participant.prepare(push({ packHash: 'a'.repeat(40) }, tip, next), stream())).rejects.toThrow(/not the signed/);
    expect(await packs()).toEqual(committed);
    expect(await keeps()).toEqual([]);
    expect((await git(['fsck', '--connectivity-only'], { cwd: repoPath() })).code).toBe(0);
  });

  it('a duplicate prepare is idempotent: it answers prepared again, and one commit applies', async () => {
    const req = push();
    await node.participant.prepare(req, stream());
    await node.participant.prepare(req, stream());
    expect(node.participant.openCount).toBe(1);
    expect(await keeps()).toHaveLength(1);
    await decide(req);
    await node.participant.commit(req.txnId);
    await node.participant.commit(req.txnId);
    expect(await mainRef()).toBe(tip);
    expect(node.log.get(req.txnId)?.state).toBe('committed');
  });

  it('commit of a transaction this node never saw is a 404 and changes nothing', async () => {
    await expect(node.participant.commit(randomUUID())).rejects.toMatchObject({ statusCode: 404 });
    expect(await node.storage.readRefs(REPO)).toEqual([]);
  });

  it('abort after prepare releases the ref lock, the pack and the activity; the aborted txn cannot commit', async () => {
    const req = push();
    await node.participant.prepare(req, stream());
    expect(node.activity.runningOn(REPO)).toEqual(['txn']);
    await node.participant.abort(req.txnId, REPO);
    expect(refLocked()).toBe(false);
    expect(await keeps()).toEqual([]);
    expect(node.activity.runningOn(REPO)).toEqual([]);
    await expect(node.participant.commit(req.txnId)).rejects.toMatchObject({ statusCode: 409 });
    await expect(node.participant.prepare(req, stream())).rejects.toMatchObject({
      status: 'failed',
      message: 'transaction already aborted',
    });
    // The ref is free: the next transaction on it prepares and commits.
    await commitThrough(push());
    expect(await mainRef()).toBe(tip);
  });

  it('an abort that arrives before the prepare makes the prepare refuse', async () => {
    const req = push();
    await node.participant.abort(req.txnId, REPO);
    await expect(node.participant.prepare(req, stream())).rejects.toMatchObject({ status: 'failed' });
    expect(refLocked()).toBe(false);
  });

  it('a committed transaction cannot be aborted', async () => {
    const req = push();
    await commitThrough(req);
    await expect(node.participant.abort(req.txnId, REPO)).rejects.toMatchObject({ statusCode: 409 });
    expect(await mainRef()).toBe(tip);
  });

  it('in doubt: waits while its coordinator holds the lock, aborts once the fencing token is stale', async () => {
    const req = push();
    await node.participant.prepare(req, stream());
    await node.participant.resolveStuck();
    expect(node.participant.openCount).toBe(1);
    expect(refLocked()).toBe(true);
    // The coordinator's lease ends and another holder takes the lock: its token is stale now.
    await kit.raw.releaseLock(REPO, token);
    await kit.raw.acquireLock(REPO, 'n8', 60_000);
    await node.participant.resolveStuck();
    expect(node.participant.openCount).toBe(0);
    expect((await kit.raw.getTxn(req.txnId))?.decision).toBe('abort');
    expect(node.log.get(req.txnId)?.state).toBe('aborted');
    expect(refLocked()).toBe(false);
  });

  it('in doubt with a commit decision in the store: resolved by committing and confirming', async () => {
    const req = push();
    await node.participant.prepare(req, stream());
    await decide(req);
    await node.participant.resolveStuck();
    expect(await mainRef()).toBe(tip);
    expect((await kit.raw.getReplicas(REPO))[0]).toMatchObject({ generation: 1, state: 'in_sync' });
  });

  it("recover after a crash: a prepared push on HEAD's branch is re-applied from the log once the decision is commit", async () => {
    const req = push();
    await node.participant.prepare(req, stream());
    await decide(req);
    // The crash: update-ref is killed (as a restarted node reaps its previous incarnation's git),
    // leaving its lock files: the ref's, and HEAD's, which it locks for HEAD's branch.
    expect(await new GitRunner({ owner: kit.dir, instance: randomUUID(), maxProcesses: 1 }).reapPrevious()).toBeGreaterThan(0);
    await eventually(() => expect(refLocked()).toBe(true));
    const activity = new RepoActivity({ nodeId: 'n1', store: kit.store, lockTtlMs: 10_000, logger: quietLogger });
    const restarted = new Participant({
      nodeId: 'n1',
      store: kit.store,
      storage: node.storage,
      git: kit.git,
      log: node.log,
      logger: quietLogger,
      failpoints: new Failpoints(undefined),
      activity,
      resolveAfterMs: 0,
    });
    await restarted.recover();
    expect(await mainRef()).toBe(tip);
    expect(node.log.get(req.txnId)?.state).toBe('committed');
    expect((await kit.raw.getReplicas(REPO))[0]).toMatchObject({ generation: 1, state: 'in_sync' });
  });

  it('an index-pack killed after writing its .keep (before its index is in) leaves no .keep and no temporary index', async () => {
    // A git whose index-pack does its work, then dies as if killed between the .keep and the index's move.
    const fake = join(kit.dir, 'git-killed-index-pack');
    await writeFile(
      fake,
      `#!/bin/sh\ncase " $* " in *" index-pack "*) git "$@" >/dev/null; : > objects/pack/tmp_idx_killed; exit 137;; esac\nexec git "$@"\n`,
      { mode: 0o755 },
    );
    const participant = participantWith({ gitBinary: fake });
    const hash = pack.subarray(pack.length - 20).toString('hex');
    await expect(participant.stage(REPO, hash, stream(), undefined)).rejects.toThrow(/pack rejected/);
    await expect(participant.prepare(push({ packHash: hash }), stream())).rejects.toThrow(/pack rejected/);
    // A copy made during an upload names no hash: its .keep is found by its own message.
    await expect(participant.stageUpload(REPO, stream(), undefined)).rejects.toThrow(/pack rejected/);
    const files = await readdir(join(repoPath(), 'objects/pack'));
    expect(files.filter((f) => f.endsWith('.keep') || f.startsWith('tmp_'))).toEqual([]);
  });

  /**
   * indexPackKilledAfterKeep writes a stand-in `git` (named `name` in the kit's directory) whose
   * index-pack reads its pack, creates an empty `pack-<hash>.keep` and dies as if killed (137),
   * as a real one stopped between creating its .keep and writing its message; every other
   * command is the real git's.
   */
  const indexPackKilledAfterKeep = async (name: string, hash: string): Promise<string> => {
    const fake = join(kit.dir, name);
    const script = `#!/bin/sh\ncase " $* " in *" index-pack "*) cat >/dev/null; : > objects/pack/pack-${hash}.keep; exit 137;; esac\nexec git "$@"\n`;
    await writeFile(fake, script, { mode: 0o755 });
    return fake;
  };

  it('an index-pack killed between creating its .keep and writing its message (an empty .keep) leaves no .keep', async () => {
    // CI once found the empty .keep of a prepare whose index-pack its refused replica check stopped.
    const hash = pack.subarray(pack.length - 20).toString('hex');
    const participant = participantWith({ gitBinary: await indexPackKilledAfterKeep('git-killed-keep', hash) });
    await expect(participant.stage(REPO, hash, stream(), undefined)).rejects.toThrow(/pack rejected/);
    expect(await keeps()).toEqual([]);
    await expect(participant.prepare(push({ packHash: hash }), stream())).rejects.toThrow(/pack rejected/);
    expect(await keeps()).toEqual([]);
    // No hash named (a copy during an upload, a prepare of an older coordinator): found by its content.
    await expect(participant.stageUpload(REPO, stream(), undefined)).rejects.toThrow(/pack rejected/);
    expect(await keeps()).toEqual([]);
    await expect(participant.prepare(push(), stream())).rejects.toThrow(/pack rejected/);
    expect(await keeps()).toEqual([]);
  });

  it("the empty .keep of a pack whose index is in (an operator's) stays when a failed index-pack cleans up", async () => {
    await commitThrough(push());
    const hash = pack.subarray(pack.length - 20).toString('hex');
    await writeFile(join(repoPath(), 'objects/pack', `pack-${hash}.keep`), '');
    const killed = 'e'.repeat(40);
    const fake = await indexPackKilledAfterKeep('git-killed-keep-beside', killed);
    await expect(participantWith({ gitBinary: fake }).stageUpload(REPO, stream(), undefined)).rejects.toThrow(/pack rejected/);
    expect(await keeps()).toEqual([`pack-${hash}.keep`]);
  });

  it('a failed index-pack removes its own temporary files, not those another index-pack is still writing', async () => {
    // Another index-pack (an upload's copy, a repair's fetch) is writing its pack beside it: the
    // file is open. Removed, that index-pack failed at its rename.
    const live = join(repoPath(), 'objects/pack/tmp_pack_live');
    const handle = await open(live, 'w');
    try {
      await handle.write('PACK');
      const fake = join(kit.dir, 'git-failing-index-pack');
      await writeFile(fake, `#!/bin/sh\ncase " $* " in *" index-pack "*) : > objects/pack/tmp_idx_orphan; exit 1;; esac\nexec git "$@"\n`, {
        mode: 0o755,
      });
      await expect(participantWith({ gitBinary: fake }).stageUpload(REPO, stream(), undefined)).rejects.toThrow(/pack rejected/);
      const files = await readdir(join(repoPath(), 'objects/pack'));
      expect(files).toContain('tmp_pack_live');
      expect(files).not.toContain('tmp_idx_orphan');
    } finally {
      await handle.close();
      await rm(live, { force: true });
    }
  });

  it('a stage still indexing when a prepare of the same pack indexed, committed and dropped its own .keep leaves no .keep', async () => {
    const hash = pack.subarray(pack.length - 20).toString('hex');
    // The stage's pack arrives slowly: its index-pack is still reading when the prepare, which
    // brought the pack itself, commits.
    const slow = new PassThrough();
    const staging = node.participant.stage(REPO, hash, slow, undefined);
    // Its index-pack runs (its temporary pack is open) before the prepare brings the same pack.
    await eventually(async () =>
      expect((await readdir(join(repoPath(), 'objects/pack'))).some((f) => f.startsWith('tmp_pack_'))).toBe(true),
    );
    await commitThrough(push({ packHash: hash }));
    expect(await keeps()).toEqual([]);
    slow.end(pack);
    await staging;
    // The stage's index-pack wrote a .keep once the transaction's was gone: nobody owned it.
    expect(await keeps()).toEqual([]);
    expect(await mainRef()).toBe(tip);
  });

  it('a prepare of a group adopts each of its staged packs; one pack missing adopts none and leaves the others staged', async () => {
    await commitThrough(push());
    const branch = async (name: string): Promise<{ oid: string; hash: string; pack: Buffer }> => {
      await gitOk(['checkout', '-q', '-B', name, tip], { cwd: work });
      const oid = await commitFile(work, `${name}.txt`, `${name}\n`, name);
      const p = await packOf(work, oid, [tip]);
      return { oid, hash: p.subarray(p.length - 20).toString('hex'), pack: p };
    };
    const [x, y, z] = [await branch('x'), await branch('y'), await branch('z')];
    for (const b of [x, y]) await node.participant.stage(REPO, b.hash, stream(b.pack), undefined);
    const group = (bs: ReadonlyArray<{ oid: string }>, names: readonly string[]): PrepareRequest => {
      const updates = bs.map((b, i) => ({ ref: `refs/heads/${names[i]!}`, oldOid: ZERO_OID, newOid: b.oid }));
      return { ...push(), updates, newChecksum: applyUpdatesToChecksum(repo.checksum, updates) };
    };
    // z was never staged: the prepare is refused as not_staged and x and y stay staged for the retry.
    const missing = { ...group([x, y, z], ['x', 'y', 'z']), stagedPacks: [x.hash, y.hash, z.hash] };
    await expect(node.participant.prepare(missing, null)).rejects.toMatchObject({ status: 'not_staged' });
    expect(node.participant.stagedCount).toBe(2);
    const req = { ...group([x, y], ['x', 'y']), stagedPacks: [x.hash, y.hash] };
    await node.participant.prepare(req, null);
    expect(node.participant.stagedCount).toBe(0);
    await decide(req);
    await node.participant.commit(req.txnId);
    const refs = await node.storage.readRefs(REPO);
    expect(refs.find((r) => r.name === 'refs/heads/x')?.oid).toBe(x.oid);
    expect(refs.find((r) => r.name === 'refs/heads/y')?.oid).toBe(y.oid);
    expect(await keeps()).toEqual([]);
    const fsck = await git(['fsck', '--connectivity-only'], { cwd: repoPath() });
    expect(fsck.code, fsck.stderr).toBe(0);
  });

  it('a pack staged again starts its time to live again: it is still there for the prepare that follows', async () => {
    // The coordinator stages all of a group's packs again when one expired; one still staged
    // must not expire between that answer and the prepare.
    const participant = participantWith({ stageTtlMs: 600 });
    const hash = pack.subarray(pack.length - 20).toString('hex');
    await participant.stage(REPO, hash, stream(), undefined);
    await new Promise((r) => setTimeout(r, 400));
    await participant.stage(REPO, hash, stream(), undefined);
    await new Promise((r) => setTimeout(r, 400));
    const req = push({ stagedPacks: [hash] });
    await participant.prepare(req, null);
    await decide(req);
    await participant.commit(req.txnId);
    expect(await mainRef()).toBe(tip);
    // Staged once and left, it does expire.
    const next = await commitFile(work, 'c.txt', 'c\n', 'third');
    const later = await packOf(work, next, [tip]);
    const laterHash = later.subarray(later.length - 20).toString('hex');
    await participant.stage(REPO, laterHash, stream(later), undefined);
    await eventually(() => expect(participant.stagedCount).toBe(0));
  });

  it('a pack given up while the same pack is staged again, then adopted and committed, keeps its objects', async () => {
    // A retried push brings the same pack: its stage may find the file of the one being given up.
    const hash = pack.subarray(pack.length - 20).toString('hex');
    await node.participant.stage(REPO, hash, stream(), undefined);
    const givingUp = node.participant.unstage(REPO, hash);
    await node.participant.stage(REPO, hash, stream(), undefined);
    await givingUp;
    const req = push({ stagedPacks: [hash] });
    await node.participant.prepare(req, null);
    await decide(req);
    await node.participant.commit(req.txnId);
    expect(await mainRef()).toBe(tip);
    const fsck = await git(['fsck', '--connectivity-only'], { cwd: repoPath() });
    expect(fsck.code, fsck.stderr).toBe(0);
    expect(await keeps()).toEqual([]);
  });

  it("a copy's tips are checked for connectivity once it is indexed; the prepare that adopts it checks none itself", async () => {
    const hash = await node.participant.stageUpload(REPO, stream(), undefined, [tip]);
    await eventually(() => expect(node.participant.copyChecksRunning).toBe(0));
    const req = push({ stagedPacks: [hash] });
    await node.participant.prepare(req, null);
    expect(node.connectivity.copy).toBe(1);
    await decide(req);
    await node.participant.commit(req.txnId);
    expect(await mainRef()).toBe(tip);
    expect(await keeps()).toEqual([]);
  });

  it('a copy whose tips are all in its own pack is checked by its links, with no rev-list; a tip found only elsewhere, or a replica without the links-checked mark, is walked', async () => {
    const log = join(kit.dir, 'rev-list.log');
    const fake = join(kit.dir, 'git-logging-rev-list');
    await writeFile(fake, `#!/bin/sh\ncase " $* " in *" rev-list "*) echo "$*" >> ${log};; esac\nexec git "$@"\n`, { mode: 0o755 });
    let byLinks = 0;
    const participant = participantWith({ gitBinary: fake, onCopyCheck: (by) => (byLinks += by === 'links' ? 1 : 0) });
    const revLists = async (): Promise<number> => (await readFile(log, 'utf8').catch(() => '')).split('\n').filter(Boolean).length;
    // The first push: its one tip is in the copy's pack.
    const hash = await participant.stageUpload(REPO, stream(), undefined, [tip]);
    await eventually(() => expect(participant.copyChecksRunning).toBe(0));
    expect(byLinks).toBe(1);
    const req = push({ stagedPacks: [hash] });
    await participant.prepare(req, null);
    await decide(req);
    await participant.commit(req.txnId);
    expect(await mainRef()).toBe(tip);
    // Neither the copy's check nor the prepare that adopted it ran rev-list.
    expect(await revLists()).toBe(0);
    // A new branch at `tip`, which this replica has, beside a commit on top of it: that tip is in
    // no pack the copy brought, so rev-list walks.
    const child = await commitFile(work, 'g.txt', 'more\n', 'child');
    const second = await participant.stageUpload(REPO, stream(await packOf(work, child, [tip])), undefined, [child, tip]);
    await eventually(() => expect(participant.copyChecksRunning).toBe(0));
    expect(byLinks).toBe(1);
    expect(await revLists()).toBe(1);
    await participant.unstage(REPO, second);
    // A replica without the links-checked mark (a push from a shallow clone took it away, or it
    // was made before the mark existed): a tip in the copy's pack is walked too.
    await rm(join(repoPath(), 'gitrep-links-checked'));
    const third = await commitFile(work, 'h.txt', 'third\n', 'third');
    const unmarked = await participant.stageUpload(REPO, stream(await packOf(work, third, [tip])), undefined, [third]);
    await eventually(() => expect(participant.copyChecksRunning).toBe(0));
    expect(byLinks).toBe(1);
    expect(await revLists()).toBe(2);
    await participant.unstage(REPO, unmarked);
    const fsck = await git(['fsck', '--connectivity-only'], { cwd: repoPath() });
    expect(fsck.code, fsck.stderr).toBe(0);
  });

  it('a copy holding a commit whose parent this replica lacks is refused by its index-pack: the link check every replica relies on', async () => {
    // The replica has nothing yet: the parent, `tip`, and its files are in neither the copy nor the replica.
    const child = await commitFile(work, 'g.txt', 'more\n', 'child');
    await expect(node.participant.stageUpload(REPO, stream(await packOf(work, child, [tip])), undefined, [child])).rejects.toThrow(
      /pack rejected: .*did not receive expected object/,
    );
    expect(await keeps()).toEqual([]);
  });

  it('a copy whose tip this replica lacks: its check fails, and the prepare checks again and refuses', async () => {
    // The copy is valid (index-pack --strict takes it), but the tip it is sent with is a commit
    // on top of it that came in no pack.
    const child = await commitFile(work, 'g.txt', 'more\n', 'child');
    const hash = await node.participant.stageUpload(REPO, stream(), undefined, [child]);
    const req = push({ stagedPacks: [hash] }, ZERO_OID, child);
    await expect(node.participant.prepare(req, null)).rejects.toThrow(/missing objects/);
    expect(node.connectivity.copy).toBe(0);
  });

  it('a pack the check relied on gone since (a repack rolled it up): the prepare checks again', async () => {
    // Two earlier pushes' packs in the replica (kept as packs, not unpacked), then the copy and its check.
    const fetch = (oid: string, ref: string): Promise<string> =>
      gitOk(['-c', 'fetch.unpackLimit=1', 'fetch', '-q', '--no-write-fetch-head', work, `${oid}:${ref}`], { cwd: repoPath() });
    await fetch(tip, 'refs/heads/base');
    const second = await commitFile(work, 'h.txt', 'second\n', 'second');
    await fetch(second, 'refs/heads/second');
    const child = await commitFile(work, 'g.txt', 'more\n', 'child');
    const hash = await node.participant.stageUpload(REPO, stream(await packOf(work, child, [second])), undefined, [child]);
    await eventually(() => expect(node.participant.copyChecksRunning).toBe(0));
    // A full repack replaces the packs without a .keep (the two earlier pushes') by one new pack.
    await gitOk(['repack', '-a', '-d', '-q'], { cwd: repoPath() });
    const req = push({ stagedPacks: [hash] }, ZERO_OID, child);
    await node.participant.prepare(req, null);
    expect(node.connectivity.copy).toBe(0);
    await decide(req);
    await node.participant.commit(req.txnId);
    expect(await mainRef()).toBe(child);
  });

  it("a prepare whose new tip its copy's check did not name checks it itself", async () => {
    // The copy brings `tip` and a commit on top; its check named `tip` only (and passed).
    const child = await commitFile(work, 'g.txt', 'more\n', 'child');
    const hash = await node.participant.stageUpload(REPO, stream(await packOf(work, child)), undefined, [tip]);
    await eventually(() => expect(node.participant.copyChecksRunning).toBe(0));
    const req = push({ stagedPacks: [hash] }, ZERO_OID, child);
    await node.participant.prepare(req, null);
    expect(node.connectivity.copy).toBe(0);
    await node.participant.abort(req.txnId);
  });

  it('a pack removed for its hash, or a replica directory replaced, after a copy check voids it', async () => {
    for (const voidIt of [
      async (): Promise<void> => {
        // A prepare whose pack is not of its signed hash: index-pack wrote it, and it is removed.
        const other = await packOf(work, await commitFile(work, 'x.txt', 'x\n', 'x'));
        await expect(node.participant.prepare(push({ packHash: 'f'.repeat(40) }), stream(other))).rejects.toThrow(/pack rejected/);
      },
      async (): Promise<void> => {
        const staged = await mkdtemp(join(tmpdir(), 'gitrep-other-'));
        await gitOk(['init', '-q', '--bare', staged]);
        await node.storage.install(staged, 'o/other');
      },
    ]) {
      const hash = await node.participant.stageUpload(REPO, stream(), undefined, [tip]);
      await eventually(() => expect(node.participant.copyChecksRunning).toBe(0));
      await voidIt();
      const req = push({ stagedPacks: [hash] });
      await node.participant.prepare(req, null);
      expect(node.connectivity.copy).toBe(0);
      await node.participant.abort(req.txnId);
      await node.participant.unstage(REPO, hash);
    }
  });

  it('two copies of one pack staged during uploads at once leave one staged pack; giving it up leaves no .keep', async () => {
    // A client's retried push through two nodes: both copy the same pack to this replica.
    for (let round = 0; round < 4; round++) {
      const [a, b] = await Promise.all([
        node.participant.stageUpload(REPO, stream(), undefined),
        node.participant.stageUpload(REPO, stream(), undefined),
      ]);
      expect(a).toBe(b);
      expect((await keeps()).length).toBe(1);
      await node.participant.unstage(REPO, a);
      expect(await keeps()).toEqual([]);
    }
  });

  it('copies of uploads beyond maxUploadCopies are refused while the others index; one ended frees its place', async () => {
    const participant = participantWith({ maxUploadCopies: 1 });
    const slow = new PassThrough();
    const first = participant.stageUpload(REPO, slow, undefined);
    await expect(participant.stageUpload(REPO, stream(), undefined)).rejects.toThrow(/1 copies of uploads are indexing already/);
    slow.end(pack);
    const hash = await first;
    await participant.unstage(REPO, hash);
    expect(await participant.stageUpload(REPO, stream(), undefined)).toBe(hash);
    await participant.unstage(REPO, hash);
    expect(await keeps()).toEqual([]);
  });

  it('a copy of an upload larger than maxUploadCopyBytes is refused by its index-pack and leaves no .keep', async () => {
    const participant = participantWith({ maxUploadCopyBytes: pack.length - 1 });
    await expect(participant.stageUpload(REPO, stream(), undefined)).rejects.toThrow(/pack rejected: .*maximum allowed size/);
    expect(await keeps()).toEqual([]);
  });
});
