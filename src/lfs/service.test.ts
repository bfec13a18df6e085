import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { beforeEach, describe, expect, it } from 'vitest';
import pino from 'pino';
import type { Membership } from '../cluster/membership.js';
import type { PeerClient } from '../cluster/peer-client.js';
import type { ReplicaStorage } from '../git/repo-storage.js';
import { RepoActivity } from '../replication/activity.js';
import { SqliteStore } from '../store/sqlite/sqlite-store.js';
import { LfsObjects } from './objects.js';
import { LfsService } from './service.js';

const INC = '7a1d0c52-2a4e-4b8e-9b52-0f6f3c1e9a01';
const REPO = 'alice/assets';

function oidOf(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex');
}

/**
 * LfsService on one node's side, with a real object store, activity registry and SQLite store:
 * what a replica does with an object a peer copies to it (accept), the path every install takes.
 */
describe('LfsService, a replica taking an object', () => {
  let objects: LfsObjects;
  let activity: RepoActivity;
  let incarnation: string | null;
  let free: number;
  let lfs: LfsService;
  const MIN_FREE = 1_000;

  beforeEach(async () => {
    const dir = await mkdtemp(join(tmpdir(), 'gitrep-lfs-service-'));
    objects = new LfsObjects(dir);
    await objects.init();
    const store = new SqliteStore(join(dir, 'cluster.db'));
    const logger = pino({ level: 'silent' });
    activity = new RepoActivity({ nodeId: 'n1', store, lockTtlMs: 5_000, logger });
    incarnation = INC;
    free = 1_000_000;
    lfs = new LfsService({
      nodeId: 'n1',
      store,
      storage: { incarnationOf: async () => incarnation } as unknown as ReplicaStorage,
      objects,
      membership: {} as Membership,
      peers: {} as PeerClient,
      logger,
      writeQuorumFor: (n) => Math.floor(n / 2) + 1,
      activity,
      diskShortage: () => null,
      freeBytes: () => free,
      minFreeBytes: MIN_FREE,
      maxObjectBytes: 10_000_000,
      timeoutMs: 10_000,
    });
  });

  it('takes an object, and one held already without writing it again', async () => {
    const content = randomBytes(5_000);
    const ref = await lfs.localRef(REPO, INC);
    await lfs.accept(ref, oidOf(content), 5_000, Readable.from([content]));
    expect(await objects.sizeOf(INC, oidOf(content))).toBe(5_000);
    await lfs.accept(ref, oidOf(content), 5_000, Readable.from([randomBytes(5_000)]));
    expect(await objects.sizeOf(INC, oidOf(content))).toBe(5_000);
  });

  it('refuses an install while the replica is dropped (its objects were handed over before), and takes it after', async () => {
    const content = randomBytes(2_000);
    const oid = oidOf(content);
    const drop = activity.tryBegin(REPO, 'drop')!;
    await expect(lfs.accept({ repoId: REPO, incarnation: INC }, oid, 2_000, Readable.from([content]))).rejects.toThrow(/being replaced/);
    expect(await objects.sizeOf(INC, oid)).toBeNull();
    expect(await readdir(objects.tmpDir)).toEqual([]);
    drop.end();
    await lfs.accept({ repoId: REPO, incarnation: INC }, oid, 2_000, Readable.from([content]));
    expect(await objects.sizeOf(INC, oid)).toBe(2_000);
  });

  it('refuses an object for an incarnation the replica no longer has (its repository deleted meanwhile), keeping nothing', async () => {
    const content = randomBytes(1_000);
    incarnation = 'another-incarnation';
    await expect(lfs.accept({ repoId: REPO, incarnation: INC }, oidOf(content), 1_000, Readable.from([content]))).rejects.toThrow(
      /no replica/,
    );
    expect(await objects.incarnations()).toEqual([]);
    expect(await readdir(objects.tmpDir)).toEqual([]);
  });

  it('counts the room objects being received take: uploads at once cannot eat the free-space reserve together', async () => {
    free = MIN_FREE + 15_000;
    const a = randomBytes(10_000);
    const b = randomBytes(10_000);
    // The first is still arriving while the second asks for room.
    const slow = new Readable({ read: () => undefined });
    const first = lfs.accept({ repoId: REPO, incarnation: INC }, oidOf(a), 10_000, slow);
    await expect(lfs.accept({ repoId: REPO, incarnation: INC }, oidOf(b), 10_000, Readable.from([b]))).rejects.toThrow(/no room/);
    slow.push(a);
    slow.push(null);
    await first;
    // Its room is given back once it is done.
    await lfs.accept({ repoId: REPO, incarnation: INC }, oidOf(b), 10_000, Readable.from([b]));
    expect((await objects.list(INC)).size).toBe(2);
  });
});
