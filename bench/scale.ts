#!/usr/bin/env node
/**
 * `npm run scale -- [--repos N] [--nodes N] [--concurrency N] [--idle-seconds N] [--store sqlite|etcd]`:
 * what a cluster costs per repository (issue 18, docs/SCALE.md). It starts real nodes, creates
 * the repos through the API, and measures creation rate, replica spread, idle CPU and store
 * operations, store operations and p50 of a small push (with 10 repos and with N, same run),
 * the first page of `GET /repos`, RSS, store bytes, and the start-up of the node holding the
 * most replicas after `kill -9`. Writes `<out>/scale-<timestamp>.json` and `.md`.
 */
import { mkdir, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { availableParallelism, cpus, loadavg, totalmem } from 'node:os';
import { join } from 'node:path';
import { Command, InvalidArgumentError } from 'commander';
import { TestCluster } from '../chaos/cluster.js';
import { findEtcdBinary, startLocalEtcd, type LocalEtcd } from '../src/cluster/local-etcd.js';
import { errorMessage } from '../src/domain/errors.js';
import { usage } from './proc.js';
import { freePort, gitOk, median, percentile, pool, sleep, tempDir } from './util.js';

/** ScaleOptions are the command's flags. */
export interface ScaleOptions {
  readonly repos: number;
  readonly nodes: number;
  readonly concurrency: number;
  readonly idleSeconds: number;
  readonly pushes: number;
  readonly store: 'sqlite' | 'etcd';
  readonly out: string;
}

/** ScaleReport is the JSON the command writes; every figure is measured in this run. */
export interface ScaleReport {
  readonly params: ScaleOptions & { replicationFactor: number };
  readonly machine: { cores: number; cpu: string; memMb: number; loadavgStart: number[]; loadavgEnd: number[] };
  readonly creation: { repos: number; seconds: number; reposPerS: number; failures: number; storeOpsPerCreate: number };
  readonly spread: { replicasPerNode: Record<string, number>; mean: number; maxDeviationPct: number };
  readonly idle: { seconds: number; cpuPctPerNode: Record<string, number>; storeOpsPerS: number; storeOpsPerSByOp: Record<string, number> };
  readonly push: {
    smallRepos: number;
    p50MsSmall: number;
    p50MsLarge: number;
    ratio: number;
    storeOpsPerPush: number;
    storeOpsPerPushByOp: Record<string, number>;
  };
  readonly listing: { firstPageMsP50: number; firstPageMsP95: number; pageSize: number };
  readonly memory: { rssMbPerNode: Record<string, number> };
  readonly storeBytes: { total: number | null; perRepo: number | null };
  readonly startup: { node: string; replicas: number; healthMs: number; cloneMs: number };
}

const SMALL_REPOS = 10;
const BENCH_ENV: Record<string, string> = {
  // The shipped defaults (FAST_ENV shortens them for failure tests): idle cost is measured as users run it.
  NODE_TTL_MS: '5000',
  LOCK_TTL_MS: '15000',
  RESOLVE_AFTER_MS: '5000',
  REPAIR_INTERVAL_MS: '1000',
  LOG_LEVEL: 'warn',
  AUTH: 'open',
};

/** repoName spreads repos over 100 owners, as a hosting site would. */
function repoName(k: number): string {
  return `owner${k % 100}/repo-${k}`;
}

/** storeOps sums `gitrep_store_operations_total` by operation over every running node. */
async function storeOps(c: TestCluster): Promise<Map<string, number>> {
  const total = new Map<string, number>();
  await Promise.all(
    c.nodes.map(async (n) => {
      if (!n.proc || n.proc.exitCode !== null) return;
      const text = await (await fetch(`${n.url}/metrics`)).text();
      for (const m of text.matchAll(/^gitrep_store_operations_total\{op="([^"]+)"\} (\d+)/gm))
        total.set(m[1]!, (total.get(m[1]!) ?? 0) + Number(m[2]));
    }),
  );
  return total;
}

function diffOps(before: Map<string, number>, after: Map<string, number>, per: number): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [op, v] of after) {
    const d = (v - (before.get(op) ?? 0)) / per;
    if (d > 0) out[op] = round(d, 2);
  }
  return out;
}

function sum(r: Record<string, number>): number {
  return Object.values(r).reduce((a, b) => a + b, 0);
}

function round(x: number, digits = 1): number {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

/** createRepos creates repos `from`..`to-1` through the nodes in turn, `concurrency` at a time; returns failures. */
async function createRepos(c: TestCluster, from: number, to: number, concurrency: number): Promise<number> {
  let failures = 0;
  await pool(to - from, concurrency, async (i) => {
    const k = from + i;
    for (let attempt = 0; attempt < 5; attempt++) {
      const r = await c.api((k % c.nodes.length) + 1, 'POST', '/repos', { repo_id: repoName(k) }).catch(() => ({ status: 0, json: {} }));
      if (r.status === 201 || (attempt > 0 && r.status === 409)) return;
      if (r.status >= 400 && r.status < 500 && r.status !== 409 && r.status !== 429) break;
      await sleep(200 * (attempt + 1));
    }
    failures++;
  });
  return failures;
}

/** pushSeries makes `count` small pushes (one new file each) into `repo` through node 1; returns their times. */
async function pushSeries(c: TestCluster, work: string, count: number): Promise<number[]> {
  const times: number[] = [];
  for (let i = 0; i < count; i++) {
    await writeFile(join(work, `f${Date.now()}-${i}.txt`), `push ${i}\n`);
    await gitOk(['add', '-A'], { cwd: work });
    await gitOk(['commit', '-q', '-m', `push ${i}`], { cwd: work });
    const t = performance.now();
    await gitOk(['push', '-q', c.repoUrl(1, repoName(0)), 'HEAD:refs/heads/main'], { cwd: work });
    times.push(performance.now() - t);
  }
  return times;
}

/**
 * measurePushes measures a push series and the store operations it cost, less what the idle
 * cluster did over the same time (measured just before, for as long as the series took).
 */
async function measurePushes(c: TestCluster, work: string, count: number): Promise<{ p50: number; opsPerPush: Record<string, number> }> {
  const o0 = await storeOps(c);
  const t0 = Date.now();
  const times = await pushSeries(c, work, count);
  const elapsed = Date.now() - t0;
  const o1 = await storeOps(c);
  await sleep(elapsed);
  const o2 = await storeOps(c);
  const pushes = diffOps(o0, o1, count);
  const idle = diffOps(o1, o2, count);
  const net: Record<string, number> = {};
  for (const [op, v] of Object.entries(pushes)) {
    const d = round(v - (idle[op] ?? 0), 2);
    if (d > 0) net[op] = d;
  }
  return { p50: round(median(times)), opsPerPush: net };
}

/** replicasPerNode counts the replica directories in each node's data dir. */
async function replicasPerNode(c: TestCluster): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const n of c.nodes) {
    let count = 0;
    const root = join(n.dataDir, 'repos');
    for (const owner of await readdir(root).catch(() => [] as string[])) {
      count += (await readdir(join(root, owner)).catch(() => [] as string[])).filter((e) => e.endsWith('.git')).length;
    }
    out[n.id] = count;
  }
  return out;
}

/** settledReplicas waits until two counts of replicas per node 3 s apart agree (at most 2 min) and returns the count. */
async function settledReplicas(c: TestCluster): Promise<Record<string, number>> {
  await sleep(3_000);
  let last = JSON.stringify(await replicasPerNode(c));
  for (let i = 0; i < 40; i++) {
    await sleep(3_000);
    const now = await replicasPerNode(c);
    if (JSON.stringify(now) === last) return now;
    last = JSON.stringify(now);
  }
  return replicasPerNode(c);
}

/** measureIdle samples each node's process tree CPU and the store operations over `seconds` without traffic. */
async function measureIdle(c: TestCluster, seconds: number): Promise<ScaleReport['idle']> {
  const pids = c.nodes.map((n) => n.proc!.pid!);
  const cpu0 = await Promise.all(pids.map((p) => usage([p])));
  const o0 = await storeOps(c);
  const t0 = Date.now();
  await sleep(seconds * 1000);
  const cpu1 = await Promise.all(pids.map((p) => usage([p])));
  const o1 = await storeOps(c);
  const wall = (Date.now() - t0) / 1000;
  const cpuPctPerNode: Record<string, number> = {};
  c.nodes.forEach((n, i) => {
    cpuPctPerNode[n.id] = round((100 * (cpu1[i]!.cpuS - cpu0[i]!.cpuS)) / wall, 2);
  });
  const byOp = diffOps(o0, o1, wall);
  return { seconds: round(wall), cpuPctPerNode, storeOpsPerS: round(sum(byOp), 2), storeOpsPerSByOp: byOp };
}

/** measureListing times the first page of `GET /repos` (the default page size) on node 1. */
async function measureListing(c: TestCluster): Promise<ScaleReport['listing']> {
  const times: number[] = [];
  let pageSize = 0;
  for (let i = 0; i < 21; i++) {
    const t = performance.now();
    const res = await fetch(`${c.url(1)}/repos`);
    const body = (await res.json()) as { count: number };
    if (i > 0) times.push(performance.now() - t);
    pageSize = body.count;
  }
  return { firstPageMsP50: round(median(times)), firstPageMsP95: round(percentile(times, 95)), pageSize };
}

async function rssMb(pid: number): Promise<number> {
  return round((await usage([pid])).rssByRootKb[0]! / 1024);
}

/**
 * measureStartup kills (-9) the node holding the most replicas, starts it again, and times its
 * first `/health` 200 and its first served clone of a repo it holds.
 */
async function measureStartup(c: TestCluster, perNode: Record<string, number>, scratch: string): Promise<ScaleReport['startup']> {
  const [nodeId, replicas] = Object.entries(perNode).sort((a, b) => b[1] - a[1])[0]!;
  const i = c.nodes.findIndex((n) => n.id === nodeId) + 1;
  const held = (await readdir(join(c.node(i).dataDir, 'repos', 'owner0'))).find((e) => e.endsWith('.git'))!;
  const repoId = `owner0/${held.slice(0, -4)}`;
  await c.kill(i);
  const t0 = performance.now();
  await c.restart(i);
  const healthMs = performance.now() - t0;
  for (let attempt = 0; ; attempt++) {
    const dest = join(scratch, `startup-clone-${attempt}`);
    try {
      await gitOk(['clone', '-q', '--bare', c.repoUrl(i, repoId), dest], { timeoutMs: 60_000 });
      break;
    } catch (err) {
      if (performance.now() - t0 > 120_000) throw new Error(`no clone from the restarted node: ${errorMessage(err)}`);
      await sleep(50);
    }
  }
  return { node: nodeId, replicas, healthMs: round(healthMs), cloneMs: round(performance.now() - t0) };
}

async function storeSize(c: TestCluster): Promise<number | null> {
  if (!c.store.startsWith('sqlite:')) return null;
  const path = c.store.slice('sqlite:'.length);
  let total = 0;
  for (const suffix of ['', '-wal']) total += (await stat(`${path}${suffix}`).catch(() => ({ size: 0 }))).size;
  return total;
}

async function startCluster(o: ScaleOptions): Promise<{ cluster: TestCluster; etcd: LocalEtcd | null }> {
  let etcd: LocalEtcd | null = null;
  if (o.store === 'etcd') {
    if (!findEtcdBinary()) throw new Error('--store etcd needs the etcd binary (Debian etcd-server)');
    etcd = await startLocalEtcd({ dir: await tempDir('scale-etcd-'), clientPort: await freePort(), peerPort: await freePort() });
  }
  try {
    const cluster = await TestCluster.start({
      nodes: o.nodes,
      replicationFactor: 3,
      env: BENCH_ENV,
      ...(etcd ? { store: etcd.storeUrl } : {}),
    });
    return { cluster, etcd };
  } catch (err) {
    await etcd?.stop();
    throw err;
  }
}

/** phaseSmall creates the first SMALL_REPOS repos and measures a push series with them alone. */
async function phaseSmall(c: TestCluster, o: ScaleOptions, work: string): Promise<{ p50: number }> {
  if ((await createRepos(c, 0, SMALL_REPOS, o.concurrency)) > 0) throw new Error('could not create the first repos');
  await c.waitInSync(repoName(0));
  await gitOk(['clone', '-q', c.repoUrl(1, repoName(0)), work]);
  await pushSeries(c, work, 3); // warm-up: the first push also sets HEAD
  return measurePushes(c, work, o.pushes);
}

/** runScale runs every measurement once and returns the report. */
export async function runScale(o: ScaleOptions, say: (line: string) => void): Promise<ScaleReport> {
  const loadavgStart = loadavg().map((x) => round(x, 2));
  const { cluster: c, etcd } = await startCluster(o);
  const scratch = await tempDir('scale-');
  try {
    say(`${o.nodes} nodes up (${o.store}); creating ${SMALL_REPOS} repos and pushing`);
    const small = await phaseSmall(c, o, join(scratch, 'work'));
    say(`push p50 with ${SMALL_REPOS} repos: ${small.p50} ms; creating ${o.repos - SMALL_REPOS} more, ${o.concurrency} at a time`);
    const ops0 = await storeOps(c);
    const t0 = performance.now();
    let failures = 0;
    for (let from = SMALL_REPOS; from < o.repos; from += 1000) {
      failures += await createRepos(c, from, Math.min(o.repos, from + 1000), o.concurrency);
      say(
        `  ${Math.min(o.repos, from + 1000)} repos, ${round((Math.min(o.repos, from + 1000) - SMALL_REPOS) / ((performance.now() - t0) / 1000))} repos/s`,
      );
    }
    const seconds = (performance.now() - t0) / 1000;
    const created = o.repos - SMALL_REPOS - failures;
    const createOps = sum(diffOps(ops0, await storeOps(c), Math.max(1, created)));
    const creation = {
      repos: created,
      seconds: round(seconds),
      reposPerS: round(created / seconds),
      failures,
      storeOpsPerCreate: round(createOps, 2),
    };
    say(`created at ${creation.reposPerS} repos/s; settling`);
    // A create is acknowledged once W replicas hold it; the last replica commits (or is
    // repaired) just after, so the replicas are counted once the counts stop moving.
    const perNode = await settledReplicas(c);
    const counts = Object.values(perNode);
    const mean = counts.reduce((a, b) => a + b, 0) / counts.length;
    const spread = {
      replicasPerNode: perNode,
      mean: round(mean),
      maxDeviationPct: round((100 * Math.max(...counts.map((x) => Math.abs(x - mean)))) / mean, 2),
    };
    say(`replicas per node ${JSON.stringify(perNode)}; ${o.idleSeconds} s idle`);
    const idle = await measureIdle(c, o.idleSeconds);
    say(`idle: cpu % ${JSON.stringify(idle.cpuPctPerNode)}, store ${idle.storeOpsPerS} ops/s`);
    const large = await measurePushes(c, join(scratch, 'work'), o.pushes);
    const push = {
      smallRepos: SMALL_REPOS,
      p50MsSmall: small.p50,
      p50MsLarge: large.p50,
      ratio: round(large.p50 / small.p50, 2),
      storeOpsPerPush: round(sum(large.opsPerPush), 2),
      storeOpsPerPushByOp: large.opsPerPush,
    };
    const listing = await measureListing(c);
    const memory = {
      rssMbPerNode: Object.fromEntries(await Promise.all(c.nodes.map(async (n) => [n.id, await rssMb(n.proc!.pid!)] as const))),
    };
    const total = await storeSize(c);
    const storeBytes = { total, perRepo: total === null ? null : Math.round(total / o.repos) };
    say(
      `push p50 ${push.p50MsLarge} ms (${push.ratio}x), ${push.storeOpsPerPush} store ops/push; GET /repos ${listing.firstPageMsP50} ms; restarting the fullest node`,
    );
    const startup = await measureStartup(c, perNode, scratch);
    const params = { ...o, replicationFactor: 3 };
    const machine = {
      cores: availableParallelism(),
      cpu: cpus()[0]?.model ?? 'unknown',
      memMb: Math.round(totalmem() / 2 ** 20),
      loadavgStart,
      loadavgEnd: loadavg().map((x) => round(x, 2)),
    };
    return { params, machine, creation, spread, idle, push, listing, memory, storeBytes, startup };
  } finally {
    await c.destroy();
    await etcd?.stop();
    await rm(scratch, { recursive: true, force: true });
  }
}

/** formatScale renders a report as the Markdown the command prints and writes. */
export function formatScale(r: ScaleReport): string {
  const p = r.params;
  const kv = (o: Record<string, number>): string =>
    Object.entries(o)
      .map(([k, v]) => `${k} ${v}`)
      .join(', ');
  return [
    `# Scale: ${p.repos} repos on ${p.nodes} nodes (R=${p.replicationFactor}, ${p.store} store)`,
    '',
    `Machine: ${r.machine.cores} cores (${r.machine.cpu}), ${r.machine.memMb} MB; load average ${r.machine.loadavgStart.join(' ')} at start, ${r.machine.loadavgEnd.join(' ')} at end.`,
    '',
    '| figure | value |',
    '|---|---|',
    `| creation (${p.concurrency} in flight) | ${r.creation.reposPerS} repos/s (${r.creation.repos} in ${r.creation.seconds} s, ${r.creation.failures} failed), ${r.creation.storeOpsPerCreate} store ops per create |`,
    `| replicas per node | ${kv(r.spread.replicasPerNode)}; mean ${r.spread.mean}, largest deviation ${r.spread.maxDeviationPct} % |`,
    `| idle CPU per node (${r.idle.seconds} s, % of a core) | ${kv(r.idle.cpuPctPerNode)} |`,
    `| idle store operations | ${r.idle.storeOpsPerS} /s in total (${kv(r.idle.storeOpsPerSByOp)}) |`,
    `| small push p50 | ${r.push.p50MsSmall} ms with ${r.push.smallRepos} repos, ${r.push.p50MsLarge} ms with ${p.repos} (${r.push.ratio}x) |`,
    `| store operations per push | ${r.push.storeOpsPerPush} (${kv(r.push.storeOpsPerPushByOp)}) |`,
    `| GET /repos first page (${r.listing.pageSize} repos) | p50 ${r.listing.firstPageMsP50} ms, p95 ${r.listing.firstPageMsP95} ms |`,
    `| node RSS (MB) | ${kv(r.memory.rssMbPerNode)} |`,
    `| store size | ${r.storeBytes.total === null ? 'n/a (etcd)' : `${r.storeBytes.total} bytes, ${r.storeBytes.perRepo} per repo`} |`,
    `| start-up after kill -9 (${r.startup.node}, ${r.startup.replicas} replicas) | /health 200 after ${r.startup.healthMs} ms, first clone served after ${r.startup.cloneMs} ms |`,
    '',
  ].join('\n');
}

function positiveInt(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError(`'${value}' is not a positive integer`);
  return n;
}

interface CliOptions {
  repos: number;
  nodes: number;
  concurrency: number;
  idleSeconds: number;
  pushes: number;
  store: string;
  out: string;
}

const program = new Command('scale')
  .description('measure what the cluster costs per repository (docs/SCALE.md)')
  .option('--repos <n>', 'repositories to create', positiveInt, 10_000)
  .option('--nodes <n>', 'nodes (R=3)', positiveInt, 6)
  .option('--concurrency <n>', 'creations in flight', positiveInt, 16)
  .option('--idle-seconds <n>', 'length of the idle measurement', positiveInt, 30)
  .option('--pushes <n>', 'pushes per push series', positiveInt, 20)
  .option('--store <kind>', 'sqlite or etcd (needs the etcd binary)', 'sqlite')
  .option('--out <dir>', 'directory for the JSON and Markdown results', 'bench/results')
  .addHelpText(
    'after',
    '\nExamples:\n  npm run scale -- --repos 1000\n  npm run scale -- --repos 50 --nodes 3 --idle-seconds 5 --pushes 5 --out /tmp/s',
  )
  .action(async (c: CliOptions) => {
    try {
      if (c.store !== 'sqlite' && c.store !== 'etcd') throw new Error(`--store must be sqlite or etcd, not '${c.store}'`);
      if (c.repos <= SMALL_REPOS) throw new Error(`--repos must be above ${SMALL_REPOS}`);
      const o: ScaleOptions = {
        repos: c.repos,
        nodes: c.nodes,
        concurrency: c.concurrency,
        idleSeconds: c.idleSeconds,
        pushes: c.pushes,
        store: c.store,
        out: c.out,
      };
      const report = await runScale(o, (line) => process.stderr.write(`scale: ${line}\n`));
      const stamp = new Date().toISOString().replace(/[:.]/g, '-');
      await mkdir(o.out, { recursive: true });
      const base = join(o.out, `scale-${stamp}`);
      await writeFile(`${base}.json`, `${JSON.stringify(report, null, 2)}\n`);
      const md = formatScale(report);
      await writeFile(`${base}.md`, md);
      process.stdout.write(`${md}\nwritten: ${base}.json, ${base}.md\n`);
    } catch (err) {
      process.stderr.write(`scale: ${errorMessage(err)}\n`);
      process.exitCode = 1;
    }
  });

await program.parseAsync(process.argv);
