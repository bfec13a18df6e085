/**
 * runChaos is one seeded chaos run: start a cluster (with a fault proxy in front of each node's
 * peer link), create repos, run K git clients against random nodes while the fault schedule
 * runs, then heal every fault, wait until every replica is in sync and no transaction is open,
 * probe that every kind of write succeeds on the healed cluster, collect the final state (refs,
 * checksum, fsck, leftover lock files of every replica, the store's locks) and run the history
 * checker.
 */
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { replicaChecksum } from '../src/domain/checksum.js';
import { readHeadTarget } from '../src/git/repo-storage.js';
import { SqliteStore } from '../src/store/sqlite/sqlite-store.js';
import { check, formatResult, type CheckResult, type Violation } from './checker.js';
import { startLocalEtcd, type LocalEtcd } from '../src/cluster/local-etcd.js';
import { FAST_ENV, TestCluster, freePort, sleep } from './cluster.js';
import { ALL_FAULTS, FaultInjector, STORE_FAULTS, type FaultEvent, type FaultKind, type StoreControl, type StoreOutage } from './faults.js';
import { killAllGit, runGit } from './gitcli.js';
import { countByOutcome, type FinalState, type Op, type Outcome, type RepoFinalState, type ReplicaState } from './history.js';
import { FaultProxy } from './proxy.js';
import { Rng } from './rng.js';
import { socketOwner } from './sockets.js';
import { Client, Recorder, SHARED_BRANCHES, type ClusterView, type Weights } from './workload.js';
import { checkLfs, lfsSummary, runLfsClient } from './lfs.js';

/** ChaosOptions configure one run. */
export interface ChaosOptions {
  readonly seed: number;
  readonly nodes: number;
  readonly clients: number;
  /** durationMs is how long clients and faults run (setup and the final checks come on top). */
  readonly durationMs: number;
  readonly replicationFactor?: number;
  readonly writeQuorum?: number;
  /** repos is how many repos the clients share (default 1 per 3 nodes, at least 2). */
  readonly repos?: number;
  readonly faults?: readonly FaultKind[];
  /**
   * store is the coordination store: `sqlite` (one shared file, default) or `etcd` (a local etcd
   * the run starts, reached by each node through its own fault proxy, for the store faults).
   */
  readonly store?: 'sqlite' | 'etcd';
  /** proxies puts a fault proxy in front of every node's peer link (default true). */
  readonly proxies?: boolean;
  /** gitTimeoutMs bounds every client git command (default 20 s); a push past it is unknown. */
  readonly gitTimeoutMs?: number;
  readonly weights?: Weights;
  /** env is added to every node's environment. */
  readonly env?: Record<string, string>;
  readonly log?: (line: string) => void;
  /** logDir keeps every node's log (its last 200 kB) there when the run ends (default CHAOS_LOG_DIR). */
  readonly logDir?: string;
  /** signal ends the workload and faults early (then the run heals, checks and cleans up as usual). */
  readonly signal?: AbortSignal;
  /** lfs adds a client uploading and reading Git LFS objects (chaos/lfs.ts), checked after the heal. */
  readonly lfs?: boolean;
}

/** ChaosReport is a finished run. */
export interface ChaosReport {
  readonly seed: number;
  readonly nodes: number;
  readonly clients: number;
  readonly replicationFactor: number;
  readonly wallMs: number;
  readonly counts: Record<string, Record<Outcome, number>>;
  readonly totals: Record<Outcome, number>;
  readonly faults: readonly FaultEvent[];
  readonly crashes: Record<string, number>;
  readonly result: CheckResult;
  readonly history: readonly Op[];
  readonly final: FinalState;
  /** text is the printable summary: seed, counts, and PASS or the violations. */
  readonly text: string;
  /** logs holds the tail of every node's log when the run failed. */
  readonly logs?: string;
}

/** runChaos runs one chaos scenario and checks it; it always stops what it started. */
export async function runChaos(opts: ChaosOptions): Promise<ChaosReport> {
  const log = opts.log ?? ((): void => undefined);
  const started = Date.now();
  const rf = opts.replicationFactor ?? Math.min(3, opts.nodes);
  const lockTtlMs = Number(opts.env?.LOCK_TTL_MS ?? FAST_ENV.LOCK_TTL_MS);
  const gitTimeoutMs = opts.gitTimeoutMs ?? 20_000;
  const root = await mkdtemp(join(tmpdir(), 'gitrep-chaos-'));
  const proxies: FaultProxy[] = [];
  const storeProxies: FaultProxy[] = [];
  let etcd: LocalEtcd | null = null;
  const killEtcd = (): void => etcd?.killNow();
  let cluster: TestCluster | null = null;
  try {
    const useProxies = opts.proxies ?? true;
    const nodeEnv: Record<string, Record<string, string>> = {};
    if (useProxies) {
      for (let i = 1; i <= opts.nodes; i++) {
        const p = await FaultProxy.start();
        proxies.push(p);
        nodeEnv[`node-${i}`] = { ADVERTISE_URL: p.url };
      }
    }
    let store: string | undefined;
    let storeControl: StoreControl | null = null;
    const nodeStore: Record<string, string> = {};
    if (opts.store === 'etcd') {
      const etcdOpts = { dir: join(root, 'etcd'), clientPort: await freePort(), peerPort: await freePort() };
      etcd = await startLocalEtcd(etcdOpts);
      process.once('exit', killEtcd);
      store = etcd.storeUrl;
      for (let i = 1; i <= opts.nodes; i++) {
        const p = await FaultProxy.start();
        p.target = etcdOpts.clientPort;
        storeProxies.push(p);
        nodeStore[`node-${i}`] = `etcd://127.0.0.1:${p.port}`;
      }
      storeControl = {
        proxies: storeProxies,
        stop: async (hard) => {
          if (!etcd) return;
          if (hard) {
            etcd.killNow();
            await etcd.exited;
          } else {
            await etcd.stop();
          }
        },
        start: async () => {
          if (etcd?.running()) return;
          etcd = await startLocalEtcd(etcdOpts);
        },
        running: () => etcd?.running() ?? false,
      };
    }
    log(
      `seed ${opts.seed}: starting ${opts.nodes} nodes on ${opts.store ?? 'sqlite'}, R=${rf}${opts.writeQuorum ? `, W=${opts.writeQuorum}` : ''}, ${opts.clients} clients, ${Math.round(opts.durationMs / 1000)} s`,
    );
    cluster = await TestCluster.start({
      nodes: opts.nodes,
      replicationFactor: rf,
      writeQuorum: opts.writeQuorum,
      env: { LOG_LEVEL: process.env.CHAOS_LOG_LEVEL ?? 'warn', ...(opts.lfs ? { LFS_SYNC_INTERVAL_MS: '2000' } : {}), ...opts.env },
      nodeEnv,
      store,
      nodeStore,
    });
    const c = cluster;
    const owners = (): Map<string, number> =>
      new Map(c.nodes.flatMap((n) => (n.proc?.pid !== undefined ? [[n.id, n.proc.pid] as [string, number]] : [])));
    const identify = await socketOwner(0, new Map()).then(
      () => process.platform === 'linux',
      () => false,
    );
    proxies.forEach((p, i) => {
      p.target = c.node(i + 1).port;
      if (identify) p.identify = (port) => socketOwner(port, owners());
    });
    await c.waitMembership();

    const repoCount = opts.repos ?? Math.max(2, Math.ceil(opts.nodes / 3));
    const repos = Array.from({ length: repoCount }, (_, i) => `chaos/r${i + 1}`);
    for (const [i, repo] of repos.entries()) await c.createRepo((i % opts.nodes) + 1, repo);

    const recorder = new Recorder();
    let injector: FaultInjector | null = null;
    const view: ClusterView = {
      repoUrl: (i, repo) => c.repoUrl(i, repo),
      pickNode: (rng) => {
        const all = c.nodes.map((_, i) => i + 1);
        const up = all.filter((i) => !injector?.down.has(i));
        return rng.next() < 0.9 && up.length > 0 ? rng.pick(up) : rng.pick(all);
      },
    };
    const mkClient = (id: string): Client =>
      new Client({ id, rng: Rng.derive(opts.seed, id), dir: join(root, id), repos, view, recorder, gitTimeoutMs, weights: opts.weights });

    const setup = mkClient('setup');
    await setup.init();
    await Promise.all(
      repos.map(async (repo) => {
        for (const b of SHARED_BRANCHES) await setup.ffPush(repo, b, 1, 5);
      }),
    );
    const clients = Array.from({ length: opts.clients }, (_, i) => mkClient(`c${i + 1}`));
    const faultClient = mkClient('faults');
    await Promise.all([...clients, faultClient].map((cl) => cl.init()));
    log(`setup done after ${Math.round((Date.now() - started) / 1000)} s`);
    injector = new FaultInjector({
      cluster: c,
      rng: Rng.derive(opts.seed, 'faults'),
      proxies: useProxies ? proxies : null,
      store: storeControl,
      kinds: opts.faults ?? ALL_FAULTS.filter((k) => storeControl !== null || !STORE_FAULTS.includes(k)),
      lockTtlMs,
      repos,
      client: faultClient,
      now: () => recorder.now(),
      log,
    });

    const end = recorder.now() + opts.durationMs;
    const deadline = (): number => (opts.signal?.aborted ? 0 : end);
    const runClient = async (cl: Client): Promise<void> => {
      for (let i = 0; i < 100_000 && recorder.now() < deadline(); i++) {
        try {
          await cl.step();
        } catch (err) {
          log(`${cl.opts.id}: ${err instanceof Error ? err.message : String(err)}`);
          await sleep(100);
        }
      }
    };
    const inj = injector;
    const lfsRun = opts.lfs
      ? runLfsClient(c, view, Rng.derive(opts.seed, 'lfs'), repos, deadline, () => recorder.now(), gitTimeoutMs)
      : Promise.resolve(null);
    const [lfs] = await Promise.all([lfsRun, ...clients.map(runClient), inj.run(deadline)]);
    log(`workload done after ${recorder.ops.length} ops, ${Math.round((Date.now() - started) / 1000)} s; healing`);
    await inj.heal();
    await c.waitMembership(30_000).catch((err: unknown) => log(`membership after heal: ${String(err)}`));

    // Liveness (I6 fails closed only without a quorum): on the healed cluster every kind of write succeeds.
    const unavailable: Violation[] = [];
    for (const [i, repo] of repos.entries()) {
      await c.waitInSync(repo, 1, 60_000).catch(() => undefined);
      const node = (i % opts.nodes) + 1;
      const outcomes = await setup.probe(repo, node);
      const bad = Object.entries(outcomes).filter(([, o]) => o !== 'ok');
      if (bad.length > 0) {
        const last = recorder.ops.filter((o) => o.client === 'setup' && o.outcome !== 'ok').slice(-bad.length);
        unavailable.push({
          kind: 'unavailable',
          repo,
          message: `${repo}: on the healed cluster, through node-${node}: ${bad.map(([k, o]) => `${k} ${o}`).join(', ')}; ${last
            .map((o) => o.detail ?? '')
            .join(' / ')
            .slice(0, 500)}`,
        });
      }
    }
    log(`liveness probe: ${unavailable.length === 0 ? 'every write kind succeeded' : `${unavailable.length} repo(s) refused writes`}`);

    const final = await collectFinal(c, repos, lockTtlMs, log);
    log(`final state collected after ${Math.round((Date.now() - started) / 1000)} s`);
    const lfsViolations = lfs ? await checkLfs(c, lfs, 60_000) : [];
    const history = markMayBeStale(recorder.ops, inj.storeOutages);
    const checked = check(history, final);
    const result: CheckResult = {
      ...checked,
      ok: checked.ok && unavailable.length === 0 && lfsViolations.length === 0,
      violations: [...checked.violations, ...unavailable, ...lfsViolations],
    };
    const counts = countByOutcome(history);
    const totals: Record<Outcome, number> = { ok: 0, failed: 0, unknown: 0 };
    for (const k of Object.values(counts)) for (const o of ['ok', 'failed', 'unknown'] as const) totals[o] += k[o];
    const crashes = Object.fromEntries(inj.crashes);
    const faultCounts: Record<string, number> = {};
    for (const e of inj.events) faultCounts[e.kind] = (faultCounts[e.kind] ?? 0) + 1;
    const wallMs = Date.now() - started;
    const text = [
      `seed ${opts.seed}: ${opts.nodes} nodes on ${opts.store ?? 'sqlite'}, R=${rf}, ${opts.clients} clients, ${repos.length} repos, ${Math.round(opts.durationMs / 1000)} s of load (${Math.round(wallMs / 1000)} s wall)`,
      `ops: ${history.length} (ok ${totals.ok}, failed ${totals.failed}, unknown ${totals.unknown})${inj.storeOutages.length > 0 ? `; ${history.filter((o) => o.kind === 'read' && o.mayBeStale).length} reads through nodes without the store, held only to seeing written values` : ''}`,
      ...Object.entries(counts)
        .sort()
        .map(([k, v]) => `  ${k.padEnd(12)} ok ${v.ok}  failed ${v.failed}  unknown ${v.unknown}`),
      `faults: ${inj.events.length} (${
        Object.entries(faultCounts)
          .map(([k, v]) => `${k} ${v}`)
          .join(', ') || 'none'
      })${
        Object.keys(crashes).length > 0
          ? `; fail points crashed: ${Object.entries(crashes)
              .map(([k, v]) => `${k} x${v}`)
              .join(', ')}`
          : ''
      }`,
      ...(proxies.length > 0 ? [`peer links: ${proxyStats(proxies)}`] : []),
      ...(lfs ? [lfsSummary(lfs)] : []),
      formatResult(result),
    ].join('\n');
    return {
      seed: opts.seed,
      nodes: opts.nodes,
      clients: opts.clients,
      replicationFactor: rf,
      wallMs,
      counts,
      totals,
      faults: inj.events,
      crashes,
      result,
      history,
      final,
      text,
      logs: result.ok ? undefined : `${relatedLines(c, result)}${c.logs()}`,
    };
  } finally {
    killAllGit();
    // CHAOS_LOG_DIR keeps every node's log (its last 200 kB) for debugging a run; CHAOS_LOG_LEVEL sets the nodes' level.
    const logDir = opts.logDir ?? process.env.CHAOS_LOG_DIR;
    if (logDir && cluster) {
      await mkdir(logDir, { recursive: true });
      for (const n of cluster.nodes) await writeFile(join(logDir, `${n.id}.log`), n.log);
    }
    await cluster?.destroy().catch(() => undefined);
    await Promise.all([...proxies, ...storeProxies].map((p) => p.close()));
    await etcd?.stop().catch(() => undefined);
    process.off('exit', killEtcd);
    await rm(root, { recursive: true, force: true });
  }
}

/**
 * STORE_RECONNECT_GRACE_MS is how long after a store outage a node may still fail to reach it
 * (its client reconnecting) and serve reads from the last generation it saw.
 */
const STORE_RECONNECT_GRACE_MS = 5_000;

/**
 * markMayBeStale flags the reads that went through a node while it could not reach the store:
 * by design (DESIGN §6) such a node serves the last generation it saw, so those reads are held
 * only to seeing values that were written, not to linearizability.
 */
function markMayBeStale(ops: readonly Op[], outages: readonly StoreOutage[]): Op[] {
  if (outages.length === 0) return [...ops];
  return ops.map((o) => {
    if (o.kind !== 'read' || !o.node) return o;
    const n = Number(o.node.slice('node-'.length));
    const hit = outages.find((w) => w.nodes.includes(n) && o.start <= w.to + STORE_RECONNECT_GRACE_MS && o.end >= w.from);
    return hit ? { ...o, mayBeStale: `${o.node} without the store in ${Math.round(hit.from)}..${Math.round(hit.to)} ms` } : o;
  });
}

function proxyStats(proxies: readonly FaultProxy[]): string {
  const t = { accepted: 0, identified: 0, cut: 0, cutBySource: 0 };
  for (const p of proxies) for (const k of Object.keys(t) as Array<keyof typeof t>) t[k] += p.stats[k];
  return `${t.accepted} connections through the fault proxies, ${t.identified} with a known source node, ${t.cut} cut (${t.cutBySource} because of the node that opened them)`;
}

/**
 * collectFinal waits until the cluster settled (every replica in sync, no open transaction, no
 * held lock) and reads every replica's state from disk.
 */
async function collectFinal(c: TestCluster, repos: readonly string[], lockTtlMs: number, log: (l: string) => void): Promise<FinalState> {
  const out: RepoFinalState[] = [];
  const converged = new Map<string, boolean>();
  for (const repo of repos) {
    converged.set(
      repo,
      await c.waitInSync(repo, 1, 60_000).then(
        () => true,
        (err: unknown) => {
          log(`${repo}: ${String(err)}`);
          return false;
        },
      ),
    );
  }
  log('replicas in sync; waiting for open transactions, staged packs and locks');
  await waitNoOpenTxns(c, 30_000).catch((err: unknown) => log(String(err)));
  const storePath = c.store.startsWith('sqlite:') ? c.store.slice('sqlite:'.length) : null;
  const store = storePath ? new SqliteStore(storePath) : null;
  try {
    for (const repo of repos) {
      const st = await c.repoStatus(1, repo);
      const replicas: ReplicaState[] = [];
      for (const r of st.replicas) {
        const i = Number(r.node.slice('node-'.length));
        replicas.push(await replicaState(c.replicaPath(i, repo), r.node, r.state === 'in_sync'));
      }
      let heldLock: RepoFinalState['heldLock'] = null;
      // A lock released normally is gone at once; one left by a dead holder expires within its
      // lease. SQLite is read directly; etcd through the node's status.
      const until = Date.now() + lockTtlMs * 3;
      for (;;) {
        const l = store ? await store.getLock(repo) : (await c.repoStatus(1, repo)).lock;
        heldLock = l ? { holder: l.holder, token: l.token } : null;
        if (!heldLock || Date.now() > until) break;
        await sleep(100);
      }
      out.push({
        repo,
        expectedChecksum: st.checksum,
        generation: st.generation,
        replicas,
        heldLock,
        converged: converged.get(repo) ?? false,
      });
    }
  } finally {
    await store?.close();
  }
  return { repos: out };
}

async function waitNoOpenTxns(c: TestCluster, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    let open = 0;
    let staged = 0;
    for (const n of c.nodes) {
      const h = (await (await fetch(`${n.url}/health`)).json()) as { open_transactions?: number; staged_packs?: number };
      open += h.open_transactions ?? 0;
      // A pack staged for a push that never prepared (its coordinator was cut off) goes after STAGE_TTL_MS.
      staged += h.staged_packs ?? 0;
    }
    if (open === 0 && staged === 0) return;
    if (Date.now() > deadline) throw new Error(`${open} transactions still open, ${staged} packs staged, after ${timeoutMs} ms`);
    await sleep(200);
  }
}

/**
 * relatedLines are the node log lines (of the last 200 kB each node keeps) that name a
 * transaction a violation names (a leftover `.keep` says whose it was): the tails alone rarely
 * reach back to it.
 */
function relatedLines(c: TestCluster, result: CheckResult): string {
  const ids = new Set(
    result.violations.flatMap((v) => v.message.match(/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/g) ?? []),
  );
  const out: string[] = [];
  for (const id of ids) {
    for (const n of c.nodes) {
      const lines = n.log.split('\n').filter((l) => l.includes(id));
      if (lines.length > 0) out.push(`--- ${n.id}, lines naming ${id}`, ...lines.slice(0, 40));
    }
  }
  return out.length > 0 ? `${out.join('\n')}\n` : '';
}

/** replicaState reads one replica: refs, checksum, fsck, leftover lock and temporary files. */
async function replicaState(path: string, node: string, inSync: boolean): Promise<ReplicaState> {
  const refsRun = await runGit(['for-each-ref', '--format=%(objectname) %(refname)'], { cwd: path, timeoutMs: 60_000 });
  const refs: Record<string, string> = {};
  for (const line of refsRun.stdout.split('\n')) {
    const sp = line.indexOf(' ');
    if (sp > 0) refs[line.slice(sp + 1)] = line.slice(0, sp);
  }
  const head = await readHeadTarget(path);
  const checksum =
    refsRun.code === 0
      ? replicaChecksum(
          Object.entries(refs).map(([name, oid]) => ({ name, oid })),
          head,
        )
      : `unreadable: ${refsRun.stderr.trim()}`;
  const fsck = await runGit(['fsck', '--no-dangling', '--no-progress'], { cwd: path, timeoutMs: 120_000 });
  return {
    node,
    inSync,
    refs,
    checksum,
    fsckOk: fsck.code === 0 && !/error|missing|broken|corrupt/i.test(fsck.stderr + fsck.stdout),
    fsckOutput: `${fsck.stdout}${fsck.stderr}`,
    ...(await leftovers(path)),
  };
}

/**
 * leftovers lists lock-like files (`*.lock`, `packed-refs.new`, pack `.keep` files with the holder
 * they name) and temporaries (`tmp_pack_*`, quarantine directories) in a replica.
 */
async function leftovers(root: string): Promise<{ lockFiles: string[]; tempFiles: string[] }> {
  const out: string[] = [];
  const temp: string[] = [];
  const walk = async (dir: string, depth: number): Promise<void> => {
    if (depth > 12) return;
    for (const e of await readdir(dir, { withFileTypes: true }).catch(() => [])) {
      const p = join(dir, e.name);
      const rel = p.slice(root.length + 1);
      if (e.isDirectory()) {
        if (e.name.startsWith('tmp_objdir-incoming-') || e.name.startsWith('incoming-')) temp.push(`${rel}/`);
        else await walk(p, depth + 1);
      } else if (e.name.endsWith('.keep') && dir.endsWith('pack')) {
        const holder = (await readFile(p, 'utf8').catch(() => '')).trim().split('\n')[0] ?? '';
        out.push(`${rel} (${holder || 'empty'})`);
      } else if (e.name.endsWith('.lock') || e.name === 'packed-refs.new') {
        out.push(rel);
      } else if (e.name.startsWith('tmp_') && dir.endsWith('pack')) {
        temp.push(rel);
      }
    }
  };
  await walk(root, 0);
  return { lockFiles: out.sort(), tempFiles: temp.sort() };
}
