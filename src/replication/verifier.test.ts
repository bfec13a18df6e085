import { existsSync } from 'node:fs';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { gitOk } from '../../test/helpers/git.js';
import { eventually, quietLogger, ReplicationKit } from '../../test/helpers/replication-kit.js';
import type { RepoId } from '../domain/repo-id.js';
import { LINKS_CHECKED, LINKS_UNCHECKED } from '../git/repo-storage.js';
import { Metrics } from '../metrics.js';
import type { RepoRecord } from '../store/types.js';
import { pickForVerification, ReplicaVerifier, verifiedKey, type Verified } from './verifier.js';

const REPO = 'o/v' as RepoId;

function repo(i: number, generation = 0): RepoRecord {
  return { repoId: `o/r${i}`, incarnation: `inc-${i}`, replicas: ['n1'], generation, checksum: 'c', createdAt: '2026-01-01T00:00:00.000Z' };
}

describe('pickForVerification', () => {
  const repos = Array.from({ length: 1000 }, (_, i) => repo(i));

  it('checks every replica never checked (after a start)', () => {
    expect(pickForVerification(repos, new Map())).toHaveLength(1000);
  });

  it('checks what changed, and of the unchanged the longest unchecked, within the sweep', () => {
    const seen = new Map<string, Verified>(repos.map((r, i) => [r.repoId, { key: verifiedKey(r), at: 10_000 - i }]));
    const moved = [repo(3, 1), repo(500, 2)];
    const now = repos.map((r) => moved.find((m) => m.repoId === r.repoId) ?? r);
    const picked = pickForVerification(now, seen, 100, 4).map((r) => r.repoId);
    // 998 unchanged over 100 passes: 10 a pass, the oldest checks first (the highest index here).
    expect(picked).toEqual(['o/r3', 'o/r500', ...Array.from({ length: 10 }, (_, k) => `o/r${999 - k}`)]);
  });

  it('re-checks at least the minimum, and all of a small set in one pass', () => {
    const few = repos.slice(0, 10);
    const seen = new Map<string, Verified>(few.map((r) => [r.repoId, { key: verifiedKey(r), at: 1 }]));
    expect(pickForVerification(few, seen, 288, 16)).toHaveLength(10);
    const all = new Map<string, Verified>(repos.map((r) => [r.repoId, { key: verifiedKey(r), at: 1 }]));
    expect(pickForVerification(repos, all, 288, 16)).toHaveLength(16);
  });

  it('treats a re-created repo (another incarnation) as changed', () => {
    const seen = new Map<string, Verified>([['o/r1', { key: verifiedKey(repo(1)), at: 1 }]]);
    const again = { ...repo(1), incarnation: 'inc-new' };
    expect(pickForVerification([again], seen, 288, 0).map((r) => r.incarnation)).toEqual(['inc-new']);
  });
});

describe('ReplicaVerifier (in process: real store and git)', () => {
  const OTHER = 'o/older' as RepoId;
  let kit: ReplicationKit;
  beforeEach(async () => {
    kit = await ReplicationKit.create({ nodes: 3 });
  });
  afterEach(async () => {
    await kit.close();
  });
  const created = async (repoId: RepoId): Promise<string> => {
    await kit.coordinator('n1').createRepo(repoId);
    await eventually(async () => expect((await kit.raw.getReplicas(repoId)).filter((r) => r.state === 'in_sync')).toHaveLength(3));
    return (await kit.raw.getRepo(repoId))!.incarnation;
  };
  /** tamper gives n1's copy a ref the store does not know: a check finds it. */
  const tamper = async (repoId: RepoId): Promise<void> => {
    const cwd = kit.node('n1').storage.repoPath(repoId);
    await gitOk(['update-ref', 'refs/tags/stray', (await gitOk(['hash-object', '-w', '--stdin'], { cwd, input: 'x' })).trim()], { cwd });
  };
  const verifier = (): ReplicaVerifier =>
    new ReplicaVerifier({
      nodeId: 'n1',
      store: kit.store,
      storage: kit.node('n1').storage,
      git: kit.git,
      logger: quietLogger,
      metrics: new Metrics(),
      gitTimeoutMs: 30_000,
      sweepMin: 0,
    });
  const stateOnN1 = async (repoId: RepoId): Promise<string | undefined> =>
    (await kit.raw.getReplicas(repoId)).find((r) => r.nodeId === 'n1')?.state;

  it.each([
    ['a replica never checked is checked in the next pass', false, 1, 'stale'],
    ['a replica a create just made counts as checked (empty by construction): no backlog after a mass creation', true, 0, 'in_sync'],
  ])('%s', async (_name, vouched, marked, state) => {
    const v = verifier();
    await created(OTHER);
    expect(await v.verify()).toBe(0);
    const incarnation = await created(REPO);
    if (vouched) v.created(REPO, incarnation);
    await tamper(REPO);
    // One unchanged replica a pass (of two): the one checked longest ago, OTHER.
    expect(await v.verify()).toBe(marked);
    expect(await stateOnN1(REPO)).toBe(state);
  });

  it("the fsck pass marks a replica made before the links-checked mark once every object's links are found; one with a link missing is marked unchecked", async () => {
    await created(REPO);
    await created(OTHER);
    const path = (repoId: RepoId): string => kit.node('n1').storage.repoPath(repoId);
    const has = (repoId: RepoId, file: string): boolean => existsSync(join(path(repoId), file));
    // Both made as a build before the mark made them; OTHER also holds, unreachable, a commit whose parent is missing.
    for (const r of [REPO, OTHER]) await rm(join(path(r), LINKS_CHECKED));
    const tree = (await gitOk(['mktree'], { cwd: path(REPO), input: '' })).trim();
    await gitOk(['hash-object', '-w', '--stdin'], { cwd: path(REPO), input: 'a blob\n' });
    const orphan = `tree ${tree}\nparent ${'1'.repeat(40)}\nauthor a <a@b> 1 +0000\ncommitter a <a@b> 1 +0000\n\nparentless\n`;
    await gitOk(['hash-object', '-t', 'commit', '-w', '--stdin'], { cwd: path(OTHER), input: orphan });
    expect(await verifier().verify(true)).toBe(0);
    expect([has(REPO, LINKS_CHECKED), has(REPO, LINKS_UNCHECKED)]).toEqual([true, false]);
    expect([has(OTHER, LINKS_CHECKED), has(OTHER, LINKS_UNCHECKED)]).toEqual([false, true]);
    // git fsck finds nothing wrong with OTHER (it checks reachable objects): still in sync.
    expect(await stateOnN1(OTHER)).toBe('in_sync');
  });

  it('a walk stopped at its first object (one that cannot be read) does not leave the listing of thousands waiting on a full pipe', async () => {
    await created(REPO);
    const path = kit.node('n1').storage.repoPath(REPO);
    await rm(join(path, LINKS_CHECKED));
    // More names than a pipe holds (30,000 x 41 bytes, packed by fast-import), and an unreadable loose object listed first.
    const blobs = Array.from({ length: 30_000 }, (_, i) => `blob\ndata ${`blob ${i}\n`.length}\nblob ${i}\n`).join('');
    await gitOk(['fast-import', '--quiet'], { cwd: path, input: blobs });
    await mkdir(join(path, 'objects', '00'), { recursive: true });
    await writeFile(join(path, 'objects', '00', '1'.repeat(38)), 'not an object\n');
    const started = Date.now();
    // The verifier's git time-out is 30 s: a listing left waiting would hold the pass that long.
    expect(await verifier().verify(true)).toBe(0);
    expect(Date.now() - started).toBeLessThan(15_000);
    expect([existsSync(join(path, LINKS_CHECKED)), existsSync(join(path, LINKS_UNCHECKED))]).toEqual([false, true]);
  });
});
