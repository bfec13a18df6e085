import { AuditLog } from '../../src/auth/audit.js';
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { vi } from 'vitest';
import type { PeerTarget } from '../../src/auth/peer-signature.js';
import { Membership } from '../../src/cluster/membership.js';
import type { PeerAnswer, PeerClient } from '../../src/cluster/peer-client.js';
import { errorMessage, StoreUnavailableError } from '../../src/domain/errors.js';
import type { Logger } from '../../src/domain/logger.js';
import {
  parseCommand,
  type ProcReceiveExchange,
  type ProcReceiveRequest,
  type PushCommand,
  type RefResult,
} from '../../src/git/proc-receive.js';
import { ReplicaStorage } from '../../src/git/repo-storage.js';
import { GitRunner } from '../../src/git/runner.js';
import { parsePrepare, type PrepareRequest } from '../../src/cluster/protocol.js';
import { Metrics } from '../../src/metrics.js';
import { RepoActivity } from '../../src/replication/activity.js';
import { Coordinator, type CoordinatorConfig } from '../../src/replication/coordinator.js';
import { Failpoints } from '../../src/replication/failpoints.js';
import { Participant, PrepareRefusal } from '../../src/replication/participant.js';
import { TxnLog } from '../../src/replication/txn-log.js';
import { SqliteStore } from '../../src/store/sqlite/sqlite-store.js';
import type { ClusterStore } from '../../src/store/types.js';
import { GIT_ENV } from './git.js';

/**
 * The in-process replication kit: Coordinator, Participant, Router and the repair pass built
 * directly, with the real SqliteStore on a temp file, real git on temp bare repos, one real
 * Participant per node, and only the peer transport faked (ScriptedPeers), so the decision
 * logic is tested without node processes or HTTP.
 */

/** quietLogger drops every line. */
export const quietLogger: Logger = {
  debug: () => undefined,
  info: () => undefined,
  warn: () => undefined,
  error: () => undefined,
  child: () => quietLogger,
};

/** PeerOp is one kind of call a coordinator makes to a peer. */
export type PeerOp = 'prepare' | 'commit' | 'abort';

/** PeerCall is a call as the fake peer client received it. */
export interface PeerCall {
  readonly node: string;
  readonly op: PeerOp;
  readonly txnId: string;
  readonly withPack: boolean;
  /** replicaChecked: a prepare that told the participant its replica record was read in sync under the lock. */
  readonly replicaChecked?: boolean;
}

/**
 * Script answers one call: `deliver` hands it to the node's real Participant (what the peer's
 * HTTP route does) and maps the result as the peer client does.
 */
export type Script = (call: PeerCall, deliver: () => Promise<PeerAnswer>) => Promise<PeerAnswer>;

/** Scripts: the scripted answers the tests use. */
export const answers = {
  /** real: the peer behaves, as its route would. */
  real: ((_c, deliver) => deliver()) as Script,
  /** refuse: the peer answers a refusal without doing anything. */
  refuse:
    (status: 'stale' | 'conflict' | 'failed', message = `replica ${status}`): Script =>
    async () => ({ ok: false, status, message }),
  /** unreachable: the call never reached the peer (a timeout, a refused connection). */
  unreachable: (async () => ({ ok: false, status: 'unreachable', message: 'timed out' })) as Script,
  /** lost: the peer did the work, but its answer was lost on the way back. */
  lost: (async (_c, deliver) => {
    await deliver();
    return { ok: false, status: 'unreachable', message: 'answer lost' };
  }) as Script,
};

/** Gate holds calls until opened: a peer slower than the coordinator's patience. */
export class Gate {
  private opened!: () => void;
  readonly open: Promise<void> = new Promise((resolve) => {
    this.opened = resolve;
  });
  /** release lets every held call through. */
  release(): void {
    this.opened();
  }
  /** held is the script that waits for the gate, then behaves. */
  get held(): Script {
    return async (_c, deliver) => {
      await this.open;
      return deliver();
    };
  }
}

/**
 * ScriptedPeers is the fake peer client: it records every call and answers per node and
 * operation by script (default: the node's real Participant answers).
 */
export class ScriptedPeers {
  readonly calls: PeerCall[] = [];
  private readonly scripts = new Map<string, Script>();

  constructor(private readonly participants: ReadonlyMap<string, Participant>) {}

  /** script sets how `node` answers `op` from now on. */
  script(node: string, op: PeerOp, script: Script): void {
    this.scripts.set(`${node} ${op}`, script);
  }

  /** callsTo lists the calls of one op made to one node. */
  callsTo(node: string, op: PeerOp): PeerCall[] {
    return this.calls.filter((c) => c.node === node && c.op === op);
  }

  /** postJson is PeerClient.postJson: a create or delete's prepare, and every commit and abort. */
  async postJson(target: PeerTarget, path: string, body: unknown): Promise<PeerAnswer> {
    const op = path.slice('/replicate/'.length) as PeerOp;
    const b = body as { transaction_id: string; repo_id?: string; replica_checked?: boolean; coordinator_confirms?: boolean };
    const call = { node: target.id, op, txnId: b.transaction_id, withPack: false, replicaChecked: b.replica_checked === true };
    return this.answer(call, async (p) => {
      if (op === 'prepare') await p.prepare(parsePrepare(body), null);
      else if (op === 'commit') await p.commit(b.transaction_id, { confirm: b.coordinator_confirms !== true });
      else await p.abort(b.transaction_id, b.repo_id ?? '');
    });
  }

  /** preparePush is PeerClient.preparePush: the pack file streamed to the participant. */
  async preparePush(target: PeerTarget, req: PrepareRequest, packPath: string | null): Promise<PeerAnswer> {
    const call = {
      node: target.id,
      op: 'prepare',
      txnId: req.txnId,
      withPack: packPath !== null,
      replicaChecked: req.replicaChecked === true,
    } as const;
    return this.answer(call, (p) => p.prepare(req, packPath ? createReadStream(packPath) : null));
  }

  /** stagePack: this peer speaks no protocol with staging, so the pack goes with the prepare. */
  async stagePack(): Promise<PeerAnswer> {
    return { ok: false, status: 'failed', message: 'cannot stage packs' };
  }

  /** health: no load reported. */
  async health(): Promise<null> {
    return null;
  }

  private async answer(call: PeerCall, run: (p: Participant) => Promise<void>): Promise<PeerAnswer> {
    this.calls.push(call);
    const deliver = async (): Promise<PeerAnswer> => {
      const p = this.participants.get(call.node);
      if (!p) return { ok: false, status: 'unreachable', message: `no node ${call.node}` };
      try {
        await run(p);
        return { ok: true, status: call.op === 'prepare' ? 'prepared' : call.op === 'commit' ? 'committed' : 'aborted' };
      } catch (err) {
        const status = err instanceof PrepareRefusal && err.status !== 'failed' ? err.status : 'failed';
        return { ok: false, status, message: errorMessage(err) };
      }
    };
    return (this.scripts.get(`${call.node} ${call.op}`) ?? answers.real)(call, deliver);
  }
}

/** StoreFaults makes chosen store methods fail: before the write (`fail`) or after it (`lose`, the answer lost). */
export class StoreFaults {
  private readonly faults = new Map<string, 'fail' | 'lose'>();
  private readonly counts = new Map<string, number>();

  /** count is how many times `method` was called through the wrapped store. */
  count(method: keyof ClusterStore): number {
    return this.counts.get(method) ?? 0;
  }

  /** set makes the next calls of `method` fail; `clear` ends it. */
  set(method: keyof ClusterStore, how: 'fail' | 'lose'): void {
    this.faults.set(method, how);
  }

  clear(): void {
    this.faults.clear();
  }

  /** wrap is `store` with these faults applied. */
  wrap(store: ClusterStore): ClusterStore {
    return new Proxy(store, {
      get: (target, prop, receiver) => {
        const value: unknown = Reflect.get(target, prop, receiver);
        if (typeof value !== 'function') return value;
        return async (...args: unknown[]) => {
          this.counts.set(String(prop), this.count(prop as keyof ClusterStore) + 1);
          const how = this.faults.get(String(prop));
          if (how === 'fail') throw new StoreUnavailableError(`store unreachable (${String(prop)})`);
          const result: unknown = await (value as (...a: unknown[]) => Promise<unknown>).apply(target, args);
          if (how === 'lose') throw new Error(`store answer lost (${String(prop)})`);
          return result;
        };
      },
    });
  }
}

/** KitNode is one in-process node: its replicas, transaction log, activity registry and participant. */
export interface KitNode {
  readonly id: string;
  readonly storage: ReplicaStorage;
  readonly log: TxnLog;
  readonly activity: RepoActivity;
  readonly participant: Participant;
  readonly membership: Membership;
  /** connectivity counts the participant's push prepares by where their connectivity check ran (its onConnectivity). */
  readonly connectivity: Record<'copy' | 'prepare', number>;
  /** coordinator is the node's latest Coordinator (kit.coordinator), told of the pushes its participant commits, as in app.ts. */
  coordinator?: Coordinator;
}

/** ReplicationKit is a cluster of in-process nodes sharing one SQLite store. */
export class ReplicationKit {
  private constructor(
    readonly dir: string,
    readonly raw: SqliteStore,
    /** store is the shared store as every node sees it: `faults` applied. */
    readonly store: ClusterStore,
    readonly faults: StoreFaults,
    readonly git: GitRunner,
    readonly nodes: KitNode[],
    readonly peers: ScriptedPeers,
  ) {}

  /** create makes `nodes` nodes (`n1`…), registered and live in the store. */
  static async create(opts: { nodes: number; resolveAfterMs?: number }): Promise<ReplicationKit> {
    const dir = await mkdtemp(join(tmpdir(), 'gitrep-kit-'));
    const raw = new SqliteStore(join(dir, 'store.db'));
    const faults = new StoreFaults();
    const store = faults.wrap(raw);
    const git = new GitRunner({ owner: dir, instance: randomUUID(), maxProcesses: 64 });
    const participants = new Map<string, Participant>();
    const peers = new ScriptedPeers(participants);
    const nodes: KitNode[] = [];
    const startedAt = new Date().toISOString();
    for (let i = 1; i <= opts.nodes; i++) {
      const id = `n${i}`;
      // A node's URL is its repos directory as a file URL: `<url>/<owner>/<name>.git` is its replica,
      // so repair fetches from a peer with real git, without HTTP.
      const info = { id, url: `file://${join(dir, id, 'repos')}`, version: 'test', startedAt };
      await raw.registerNode(info, 3_600_000);
      const storage = new ReplicaStorage(join(dir, id), git);
      await storage.init();
      const log = new TxnLog(join(dir, id, 'node.db'));
      const activity = new RepoActivity({ nodeId: id, store, lockTtlMs: 10_000, logger: quietLogger });
      const connectivity = { copy: 0, prepare: 0 };
      const late: { node?: KitNode } = {};
      const participant = new Participant({
        nodeId: id,
        store,
        storage,
        git,
        log,
        logger: quietLogger,
        failpoints: new Failpoints(undefined),
        activity,
        resolveAfterMs: opts.resolveAfterMs ?? 60_000,
        onConnectivity: (at) => connectivity[at]++,
        onPushCommitted: (c) => late.node?.coordinator?.advanceKnownRefs(c),
      });
      const membership = new Membership(info, { store, peers: peers as unknown as PeerClient, logger: quietLogger, ttlMs: 3_600_000 });
      membership.learn(await raw.allNodes());
      participants.set(id, participant);
      late.node = { id, storage, log, activity, participant, membership, connectivity };
      nodes.push(late.node);
    }
    return new ReplicationKit(dir, raw, store, faults, git, nodes, peers);
  }

  /** node is node `nX` by id. */
  node(id: string): KitNode {
    const n = this.nodes.find((x) => x.id === id);
    if (!n) throw new Error(`no node ${id}`);
    return n;
  }

  /** coordinator is a Coordinator on node `id` with W, time-outs and a catch-up as given. */
  coordinator(id: string, config: Partial<CoordinatorConfig> = {}, catchUp?: (repoId: string) => Promise<boolean>): Coordinator {
    const n = this.node(id);
    const coordinator = new Coordinator({
      nodeId: id,
      store: this.store,
      storage: n.storage,
      participant: n.participant,
      activity: n.activity,
      peers: this.peers as unknown as PeerClient,
      membership: n.membership,
      failpoints: new Failpoints(undefined),
      audit: new AuditLog(this.store, quietLogger, id),
      logger: quietLogger,
      metrics: new Metrics(),
      ...(catchUp ? { catchUp } : {}),
      config: {
        replicationFactor: this.nodes.length,
        writeQuorum: undefined,
        lockWaitMs: 2_000,
        prepareTimeoutMs: 5_000,
        commitTimeoutMs: 5_000,
        ...config,
      },
    });
    n.coordinator = coordinator;
    return coordinator;
  }

  /** close closes the logs and the store and removes every file. */
  async close(): Promise<void> {
    for (const n of this.nodes) n.log.close();
    await this.raw.close();
    await rm(this.dir, { recursive: true, force: true });
  }
}

/** packOf is the pack of what `tip` brings from `work` (everything reachable, less `exclude`), as git would send it. */
export function packOf(work: string, tip: string, exclude: readonly string[] = []): Promise<Buffer> {
  return new Promise<Buffer>((resolve, reject) => {
    const child = spawn('git', ['pack-objects', '--revs', '--stdout', '-q'], { cwd: work, env: GIT_ENV });
    const out: Buffer[] = [];
    child.stdout.on('data', (d: Buffer) => out.push(d));
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve(Buffer.concat(out)) : reject(new Error(`pack-objects exit ${code}`))));
    child.stdin.end(`${tip}\n${exclude.map((e) => `^${e}\n`).join('')}`);
  });
}

/**
 * receivePack stands in for receive-pack on node `id`: it stores the pack of what `tip` brings
 * in the replica as receive-pack does, with a `.keep` naming receive-pack's pid, which is how
 * the coordinator finds it.
 */
export async function receivePack(
  kit: ReplicationKit,
  id: string,
  repoId: string,
  work: string,
  tip: string,
  pid: number,
  exclude: readonly string[] = [],
): Promise<void> {
  const pack = await packOf(work, tip, exclude);
  await new Promise<void>((resolve, reject) => {
    const child = spawn('git', ['index-pack', '--stdin', `--keep=receive-pack ${pid} on test`], {
      cwd: kit.node(id).storage.repoPath(repoId),
      env: GIT_ENV,
      stdio: ['pipe', 'ignore', 'pipe'],
    });
    let err = '';
    child.stderr.on('data', (d: Buffer) => {
      err += d.toString();
    });
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve() : reject(new Error(`index-pack exit ${code}: ${err}`))));
    child.stdin.end(pack);
  });
}

/** FakeExchange is a proc-receive exchange with the given commands; it keeps the report. */
export class FakeExchange {
  readonly progressLines: string[] = [];
  results: Map<string, RefResult> | null = null;
  abandoned = false;
  private readonly commands: PushCommand[];

  constructor(
    lines: ReadonlyArray<[old: string, next: string, ref: string]>,
    private readonly atomic = false,
  ) {
    this.commands = lines.map(([o, n, r]) => parseCommand(Buffer.from(`${o} ${n} ${r}`)));
  }

  async read(): Promise<ProcReceiveRequest> {
    return { commands: this.commands, atomic: this.atomic };
  }

  report(commands: readonly PushCommand[], resultOf: (c: PushCommand) => RefResult): void {
    this.results = new Map(commands.map((c) => [c.ref, resultOf(c)]));
  }

  progress(line: string): void {
    this.progressLines.push(line);
  }

  abandon(): void {
    this.abandoned = true;
  }

  /** asExchange is this fake typed as the exchange the coordinator takes. */
  get asExchange(): ProcReceiveExchange {
    return this as unknown as ProcReceiveExchange;
  }
}

/**
 * eventually retries `check` until it passes (what other tasks finish in the background: a
 * straggler's commit, an abort sent to a slow peer), for up to 15 s on a loaded machine.
 */
export function eventually<T>(check: () => T | Promise<T>): Promise<T> {
  return vi.waitFor(check, { timeout: 15_000, interval: 20 });
}
