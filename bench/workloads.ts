import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { RssSampler, usage } from './proc.js';
import type { NodeControl, ServerId, ServerUnderTest } from './servers.js';
import { CLIENT_GIT_ENV, errorText, git, gitOk, lastLines, mean, percentile, pool, sleep } from './util.js';

/** WorkloadId names a workload; `--only` takes these or their numbers 1-8. */
export type WorkloadId =
  | 'push-latency'
  | 'clone-mirror'
  | 'mirror-push'
  | 'concurrent-repos'
  | 'concurrent-branches'
  | 'concurrent-clones'
  | 'big-clone'
  | 'repair';

/** MetricDef describes one number a workload reports per round. */
export interface MetricDef {
  readonly name: string;
  readonly unit: string;
  readonly better: 'lower' | 'higher' | 'info';
}

/** Sample is one round of one workload on one server: metric name to value. */
export type Sample = Record<string, number>;

/** ServerRuns is what one server did in one workload. */
export interface ServerRuns {
  rounds: Sample[];
  errors: string[];
  /** setup holds one-off measurements (e.g. the untimed-by-rounds push that loads a repo). */
  setup: Record<string, number>;
}

/** Params size the workloads; `--quick` shrinks them all. */
export interface Params {
  readonly quick: boolean;
  readonly rounds: number;
  readonly pushes: number;
  readonly concurrency: number;
  readonly pushesPerClient: number;
  readonly cloneClients: number;
  readonly clonesPerClient: number;
  readonly bigMb: number;
  /**
   * warmup is how many untimed one-file pushes each server takes before the first workload
   * (warmUp): a server that has run for a while has its hot paths compiled, one just started
   * runs them in V8's interpreter.
   */
  readonly warmup: number;
}

/** FULL and QUICK are the two sizes of the suite. */
export const FULL: Omit<Params, 'rounds'> = {
  quick: false,
  pushes: 100,
  concurrency: 16,
  pushesPerClient: 4,
  cloneClients: 32,
  clonesPerClient: 1,
  bigMb: 200,
  warmup: 300,
};
export const QUICK: Omit<Params, 'rounds'> = {
  quick: true,
  pushes: 5,
  concurrency: 2,
  pushesPerClient: 1,
  cloneClients: 2,
  clonesPerClient: 1,
  bigMb: 5,
  warmup: 2,
};

/** Fixtures are the prepared client-side repos (bare) the workloads push. */
export interface Fixtures {
  /** mirror is the repo for the mirror workloads (express, or a small stand-in in --quick). */
  readonly mirror: string;
  readonly mirrorName: string;
  readonly mirrorRefs: number;
  readonly mirrorPackMb: number;
  readonly big: string;
  readonly bigPackMb: number;
  readonly small: string;
}

/** Ctx is what a workload runs with. */
export interface Ctx {
  readonly params: Params;
  readonly servers: readonly ServerUnderTest[];
  /** work is a scratch directory for clones and generated client repos. */
  readonly work: string;
  readonly fixtures: Fixtures;
  log(message: string): void;
}

/** Workload is one benchmark: it runs every round against every server and returns their samples. */
export interface Workload {
  readonly id: WorkloadId;
  readonly number: number;
  readonly title: string;
  readonly metrics: readonly MetricDef[];
  /** primary is the metric the summary table and the ratios lead with. */
  readonly primary: string;
  describe(p: Params): string;
  run(ctx: Ctx): Promise<Map<ServerId, ServerRuns>>;
}

const PUSH_TIMEOUT = 120_000;
const BIG_TIMEOUT = 900_000;

function emptyRuns(servers: readonly ServerUnderTest[]): Map<ServerId, ServerRuns> {
  return new Map(servers.map((s) => [s.id, { rounds: [], errors: [], setup: {} }]));
}

/** rotate starts the server order at a different server each round, so no server always goes first. */
function rotate<T>(items: readonly T[], by: number): T[] {
  const n = items.length;
  return items.map((_, i) => items[(i + by) % n]!);
}

/** alternate runs `body` for every round and, within a round, for every server in rotated order. */
async function alternate(
  ctx: Ctx,
  runs: Map<ServerId, ServerRuns>,
  body: (s: ServerUnderTest, round: number) => Promise<Sample>,
  skip: ReadonlySet<ServerId> = new Set(),
): Promise<void> {
  for (let r = 0; r < ctx.params.rounds; r++) {
    for (const s of rotate(ctx.servers, r)) {
      const out = runs.get(s.id)!;
      if (skip.has(s.id)) continue;
      try {
        out.rounds.push(await body(s, r));
      } catch (err) {
        out.errors.push(`round ${r + 1}: ${errorText(err)}`);
        ctx.log(`  ${s.id}: round ${r + 1} failed: ${errorText(err)}`);
      }
    }
  }
}

/** setupEach runs a one-off setup per server; a server whose setup fails is skipped by the rounds. */
async function setupEach(
  ctx: Ctx,
  runs: Map<ServerId, ServerRuns>,
  body: (s: ServerUnderTest) => Promise<Record<string, number>>,
): Promise<Set<ServerId>> {
  const failed = new Set<ServerId>();
  for (const s of ctx.servers) {
    try {
      runs.get(s.id)!.setup = await body(s);
    } catch (err) {
      failed.add(s.id);
      runs.get(s.id)!.errors.push(`setup: ${errorText(err)}`);
      ctx.log(`  ${s.id}: setup failed: ${errorText(err)}\n${s.logTail().slice(-1500)}`);
    }
  }
  return failed;
}

/** push runs `git push` of `refspecs` from the local repo `cwd` and throws with git's words on failure. */
async function push(cwd: string, url: string, refspecs: readonly string[], timeoutMs = PUSH_TIMEOUT): Promise<number> {
  const r = await git(['push', '-q', url, ...refspecs], { cwd, timeoutMs });
  if (r.code !== 0) throw new Error(`git push ${url} ${refspecs.join(' ')} failed (${r.code}): ${lastLines(r.stderr)}`);
  return r.ms;
}

/** cpuOf is the CPU seconds a server's process trees have used so far. */
async function cpuOf(s: ServerUnderTest): Promise<number> {
  return (await usage(s.pids())).cpuS;
}

/** measured runs `op` while sampling the server's RSS, and adds its seconds, memory and CPU to a sample. */
async function measured(s: ServerUnderTest, op: () => Promise<number>): Promise<Sample> {
  const sampler = new RssSampler(() => s.pids(), 50);
  const cpu0 = await cpuOf(s);
  await sampler.start();
  let ms: number;
  try {
    ms = await op();
  } catch (err) {
    await sampler.stop();
    throw err;
  }
  const rss = await sampler.stop();
  const cpu1 = await cpuOf(s);
  return {
    seconds: ms / 1000,
    rss_peak_mb: rss.peakMb,
    rss_node_peak_mb: rss.peakPerRootMb,
    rss_growth_mb: Math.round((rss.peakMb - rss.baseMb) * 10) / 10,
    rss_anon_peak_mb: rss.peakAnonMb,
    rss_node_anon_peak_mb: rss.peakAnonPerRootMb,
    server_cpu_s: Math.round((cpu1 - cpu0) * 100) / 100,
  };
}

/**
 * chains builds, once per run, a bare client repo with one initial commit on main and
 * `branches` branches `c0..` of `perBranch` one-file commits each on top of it; returns the
 * initial commit and each branch's commits, oldest first. Every server gets the same objects.
 */
async function chains(dir: string, branches: number, perBranch: number): Promise<{ initial: string; branch: string[][] }> {
  await gitOk(['init', '-q', '--bare', '-b', 'main', dir]);
  const child = spawn('git', ['fast-import', '--quiet'], { cwd: dir, env: CLIENT_GIT_ENV, stdio: ['pipe', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (d: string) => {
    stderr += d;
  });
  const closed = new Promise<number | null>((r) => child.on('close', (code) => r(code)));
  child.stdin.on('error', () => undefined);
  const parts: string[] = [];
  let mark = 0;
  const commit = (ref: string, parent: number | null, file: string, n: number): number => {
    const body = `${randomBytes(96).toString('base64')}\n`;
    const blob = ++mark;
    parts.push(`blob\nmark :${blob}\ndata ${body.length}\n${body}\n`);
    const m = ++mark;
    const msg = `bench ${file}\n`;
    parts.push(
      `commit ${ref}\nmark :${m}\ncommitter Bench <bench@example.com> ${1_700_000_000 + n} +0000\ndata ${msg.length}\n${msg}${parent ? `from :${parent}\n` : ''}M 100644 :${blob} ${file}\n\n`,
    );
    return m;
  };
  const root = commit('refs/heads/main', null, 'README.md', 0);
  for (let b = 0; b < branches; b++) {
    let parent = root;
    for (let i = 0; i < perBranch; i++) parent = commit(`refs/heads/c${b}`, parent, `c${b}/f-${i}.txt`, i + 1);
  }
  child.stdin.end(parts.join(''));
  const code = await closed;
  if (code !== 0) throw new Error(`git fast-import failed: ${lastLines(stderr)}`);
  const initial = (await gitOk(['rev-parse', 'refs/heads/main'], { cwd: dir })).trim();
  const branch: string[][] = [];
  for (let b = 0; b < branches; b++) {
    branch.push((await gitOk(['rev-list', '--reverse', `refs/heads/c${b}`, '^refs/heads/main'], { cwd: dir })).split('\n').filter(Boolean));
  }
  return { initial, branch };
}

const PUSH_METRICS: MetricDef[] = [
  { name: 'p50_ms', unit: 'ms', better: 'lower' },
  { name: 'p99_ms', unit: 'ms', better: 'lower' },
  { name: 'mean_ms', unit: 'ms', better: 'lower' },
  { name: 'server_cpu_ms', unit: 'ms/push', better: 'lower' },
  { name: 'auth_ms', unit: 'ms/push', better: 'lower' },
  { name: 'errors', unit: 'pushes', better: 'lower' },
];

/**
 * authSecondsOf sums, over a server's nodes, the time spent deciding authentication and
 * authorisation (`gitrep_auth_seconds_sum`); null for servers without the metric.
 */
async function authSecondsOf(s: ServerUnderTest): Promise<number | null> {
  if (!s.metricsUrls) return null;
  let total = 0;
  for (const url of s.metricsUrls) {
    const text = await (await fetch(url, { signal: AbortSignal.timeout(10_000) })).text();
    for (const m of text.matchAll(/^gitrep_auth_seconds_sum\{[^}]*\} ([0-9.e+-]+)$/gm)) total += Number(m[1]);
  }
  return total;
}

const pushLatency: Workload = {
  id: 'push-latency',
  number: 1,
  title: 'small push latency',
  metrics: PUSH_METRICS,
  primary: 'p50_ms',
  describe: (p) => `${p.pushes} sequential pushes of a one-file commit to main per round; the servers take turns push by push`,
  async run(ctx) {
    const runs = emptyRuns(ctx.servers);
    const n = ctx.params.pushes;
    for (let r = 0; r < ctx.params.rounds; r++) {
      const src = join(ctx.work, `push-latency-${r}.git`);
      const { initial, branch } = await chains(src, 1, n);
      const commits = branch[0]!;
      const repo = `bench/push-r${r}`;
      const live: ServerUnderTest[] = [];
      for (const s of ctx.servers) {
        try {
          await s.createRepo(repo);
          await push(src, s.url(repo), [`${initial}:refs/heads/main`]);
          live.push(s);
        } catch (err) {
          runs.get(s.id)!.errors.push(`round ${r + 1} setup: ${errorText(err)}`);
        }
      }
      const times = new Map<ServerId, number[]>(live.map((s) => [s.id, []]));
      const cpu = new Map<ServerId, number[]>(live.map((s) => [s.id, []]));
      const errors = new Map<ServerId, number>(live.map((s) => [s.id, 0]));
      const auth0 = new Map<ServerId, number | null>();
      for (const s of live) auth0.set(s.id, await authSecondsOf(s));
      for (let i = 0; i < n; i++) {
        for (const s of rotate(live, i + r)) {
          const c0 = await cpuOf(s);
          try {
            times.get(s.id)!.push(await push(src, s.url(repo), [`${commits[i]!}:refs/heads/main`]));
            cpu.get(s.id)!.push((await cpuOf(s)) - c0);
          } catch (err) {
            errors.set(s.id, errors.get(s.id)! + 1);
            const e = runs.get(s.id)!.errors;
            if (e.length < 20) e.push(`round ${r + 1} push ${i + 1}: ${errorText(err)}`);
          }
        }
      }
      for (const s of live) {
        const t = times.get(s.id)!;
        if (t.length === 0) continue;
        const a0 = auth0.get(s.id) ?? null;
        const a1 = a0 === null ? null : await authSecondsOf(s);
        runs.get(s.id)!.rounds.push({
          p50_ms: percentile(t, 50),
          p99_ms: percentile(t, 99),
          mean_ms: mean(t),
          server_cpu_ms: mean(cpu.get(s.id)!) * 1000,
          ...(a0 !== null && a1 !== null ? { auth_ms: ((a1 - a0) * 1000) / t.length } : {}),
          errors: errors.get(s.id)!,
        });
      }
      await rm(src, { recursive: true, force: true });
    }
    return runs;
  },
};

const MEMORY_METRICS: MetricDef[] = [
  { name: 'seconds', unit: 's', better: 'lower' },
  { name: 'rss_peak_mb', unit: 'MB', better: 'lower' },
  { name: 'rss_node_peak_mb', unit: 'MB', better: 'lower' },
  { name: 'rss_growth_mb', unit: 'MB', better: 'lower' },
  { name: 'rss_anon_peak_mb', unit: 'MB', better: 'lower' },
  { name: 'rss_node_anon_peak_mb', unit: 'MB', better: 'lower' },
  { name: 'server_cpu_s', unit: 's', better: 'lower' },
];

async function refCount(dir: string): Promise<number> {
  return (await gitOk(['for-each-ref', '--format=%(refname)'], { cwd: dir })).split('\n').filter(Boolean).length;
}

const cloneMirror: Workload = {
  id: 'clone-mirror',
  number: 2,
  title: 'git clone --mirror',
  metrics: MEMORY_METRICS,
  primary: 'seconds',
  describe: () =>
    "`git clone --mirror` of the mirror repo (pushed into each server once, untimed); RSS sums the server's process trees, sampled every 50 ms",
  async run(ctx) {
    const runs = emptyRuns(ctx.servers);
    const repo = 'bench/mirror';
    const failed = await setupEach(ctx, runs, async (s) => {
      await s.createRepo(repo);
      const ms = await push(ctx.fixtures.mirror, s.url(repo), ['--mirror'], BIG_TIMEOUT);
      return { load_push_s: ms / 1000 };
    });
    await alternate(
      ctx,
      runs,
      async (s, r) => {
        const dir = join(ctx.work, `clone-mirror-${s.id}-${r}.git`);
        try {
          const sample = await measured(s, async () => {
            const res = await git(['clone', '-q', '--mirror', s.url(repo), dir], { timeoutMs: BIG_TIMEOUT });
            if (res.code !== 0) throw new Error(`clone failed (${res.code}): ${lastLines(res.stderr)}`);
            return res.ms;
          });
          const refs = await refCount(dir);
          if (refs !== ctx.fixtures.mirrorRefs) throw new Error(`clone has ${refs} refs, expected ${ctx.fixtures.mirrorRefs}`);
          return sample;
        } finally {
          await rm(dir, { recursive: true, force: true });
        }
      },
      failed,
    );
    return runs;
  },
};

const mirrorPush: Workload = {
  id: 'mirror-push',
  number: 3,
  title: 'git push --mirror into an empty repo',
  metrics: [...MEMORY_METRICS, { name: 'clone_after_s', unit: 's', better: 'lower' }],
  primary: 'seconds',
  describe: () =>
    '`git push --mirror` of the mirror repo into a new empty repo each round (repo creation untimed); clone_after_s: right after the push, `git clone --mirror` from the second and then the third node (a single server: from it, twice), the mean of the two',
  async run(ctx) {
    const runs = emptyRuns(ctx.servers);
    await alternate(ctx, runs, async (s, r) => {
      const repo = `bench/mirror-push-r${r}`;
      await s.createRepo(repo);
      const sample = await measured(s, () => push(ctx.fixtures.mirror, s.url(repo), ['--mirror'], BIG_TIMEOUT));
      let cloneMs = 0;
      for (const client of [1, 2]) {
        const dir = join(ctx.work, `clone-after-${s.id}-${r}-${client}.git`);
        try {
          const res = await git(['clone', '-q', '--mirror', s.url(repo, client), dir], { timeoutMs: BIG_TIMEOUT });
          if (res.code !== 0) throw new Error(`clone after the push failed (${res.code}): ${lastLines(res.stderr)}`);
          const refs = await refCount(dir);
          if (refs !== ctx.fixtures.mirrorRefs)
            throw new Error(`clone after the push has ${refs} refs, expected ${ctx.fixtures.mirrorRefs}`);
          cloneMs += res.ms;
        } finally {
          await rm(dir, { recursive: true, force: true });
        }
      }
      return { ...sample, clone_after_s: cloneMs / 2 / 1000 };
    });
    return runs;
  },
};

const CONCURRENT_METRICS: MetricDef[] = [
  { name: 'pushes_per_s', unit: 'pushes/s', better: 'higher' },
  { name: 'p50_ms', unit: 'ms', better: 'lower' },
  { name: 'p99_ms', unit: 'ms', better: 'lower' },
  { name: 'server_cpu_ms', unit: 'ms/push', better: 'lower' },
  { name: 'errors', unit: 'pushes', better: 'lower' },
];

/** concurrentPushes runs `clients` clients, each pushing its own chain one commit at a time to `target(k)`. */
async function concurrentPushes(
  s: ServerUnderTest,
  src: string,
  branch: string[][],
  target: (k: number) => { repo: string; ref: string },
  errs: string[],
): Promise<Sample> {
  const latencies: number[] = [];
  let failures = 0;
  const cpu0 = await cpuOf(s);
  const started = performance.now();
  await Promise.all(
    branch.map(async (commits, k) => {
      const { repo, ref } = target(k);
      for (const c of commits) {
        try {
          latencies.push(await push(src, s.url(repo, k), [`${c}:${ref}`]));
        } catch (err) {
          failures++;
          if (errs.length < 20) errs.push(errorText(err));
        }
      }
    }),
  );
  const wall = (performance.now() - started) / 1000;
  const cpu = (await cpuOf(s)) - cpu0;
  if (latencies.length === 0) throw new Error(`every push failed: ${errs.at(-1) ?? ''}`);
  return {
    pushes_per_s: latencies.length / wall,
    p50_ms: percentile(latencies, 50),
    p99_ms: percentile(latencies, 99),
    server_cpu_ms: (cpu * 1000) / latencies.length,
    errors: failures,
  };
}

const concurrentRepos: Workload = {
  id: 'concurrent-repos',
  number: 4,
  title: 'concurrent pushes, distinct repos',
  metrics: CONCURRENT_METRICS,
  primary: 'pushes_per_s',
  describe: (p) =>
    `${p.concurrency} clients at once, each pushing ${p.pushesPerClient} one-file commits one by one to its own repo (a cluster's clients are spread over its nodes)`,
  async run(ctx) {
    const runs = emptyRuns(ctx.servers);
    const { concurrency, pushesPerClient } = ctx.params;
    const src = join(ctx.work, 'concurrent-repos.git');
    const { initial, branch } = await chains(src, concurrency, pushesPerClient);
    await alternate(ctx, runs, async (s, r) => {
      const repos = branch.map((_, k) => `bench/conc-r${r}-${k}`);
      await pool(repos.length, 4, async (k) => {
        await s.createRepo(repos[k]!);
        await push(src, s.url(repos[k]!, k), [`${initial}:refs/heads/main`]);
      });
      return concurrentPushes(s, src, branch, (k) => ({ repo: repos[k]!, ref: 'refs/heads/main' }), runs.get(s.id)!.errors);
    });
    return runs;
  },
};

const concurrentBranches: Workload = {
  id: 'concurrent-branches',
  number: 5,
  title: 'concurrent pushes, one repo',
  metrics: CONCURRENT_METRICS,
  primary: 'pushes_per_s',
  describe: (p) =>
    `${p.concurrency} clients at once, each pushing ${p.pushesPerClient} one-file commits one by one to its own branch of ONE repo; this project serialises a repo's pushes on its write lock by design`,
  async run(ctx) {
    const runs = emptyRuns(ctx.servers);
    const { concurrency, pushesPerClient } = ctx.params;
    const src = join(ctx.work, 'concurrent-branches.git');
    const { initial, branch } = await chains(src, concurrency, pushesPerClient);
    await alternate(ctx, runs, async (s, r) => {
      const repo = `bench/branches-r${r}`;
      await s.createRepo(repo);
      await push(src, s.url(repo), [`${initial}:refs/heads/main`]);
      return concurrentPushes(s, src, branch, (k) => ({ repo, ref: `refs/heads/c${k}` }), runs.get(s.id)!.errors);
    });
    return runs;
  },
};

const concurrentClones: Workload = {
  id: 'concurrent-clones',
  number: 6,
  title: 'concurrent clones of a small repo',
  metrics: [
    { name: 'clones_per_s', unit: 'clones/s', better: 'higher' },
    { name: 'p50_ms', unit: 'ms', better: 'lower' },
    { name: 'p99_ms', unit: 'ms', better: 'lower' },
    { name: 'server_cpu_ms', unit: 'ms/clone', better: 'lower' },
    { name: 'errors', unit: 'clones', better: 'lower' },
  ],
  primary: 'clones_per_s',
  describe: (p) =>
    `${p.cloneClients} clients at once, each running \`git clone --bare\` of a 20-commit repo ${p.clonesPerClient} time(s) (a cluster's clients are spread over its nodes)`,
  async run(ctx) {
    const runs = emptyRuns(ctx.servers);
    const repo = 'bench/small';
    const failed = await setupEach(ctx, runs, async (s) => {
      await s.createRepo(repo);
      await push(ctx.fixtures.small, s.url(repo), ['refs/heads/main:refs/heads/main']);
      return {};
    });
    const { cloneClients, clonesPerClient } = ctx.params;
    await alternate(
      ctx,
      runs,
      async (s, r) => {
        const base = join(ctx.work, `clones-${s.id}-${r}`);
        await mkdir(base, { recursive: true });
        const latencies: number[] = [];
        let failures = 0;
        const errs = runs.get(s.id)!.errors;
        try {
          const cpu0 = await cpuOf(s);
          const started = performance.now();
          await Promise.all(
            Array.from({ length: cloneClients }, async (_, k) => {
              for (let j = 0; j < clonesPerClient; j++) {
                const res = await git(['clone', '-q', '--bare', s.url(repo, k), join(base, `${k}-${j}.git`)], { timeoutMs: PUSH_TIMEOUT });
                if (res.code === 0) latencies.push(res.ms);
                else {
                  failures++;
                  if (errs.length < 20) errs.push(`clone failed (${res.code}): ${lastLines(res.stderr)}`);
                }
              }
            }),
          );
          const wall = (performance.now() - started) / 1000;
          const cpu = (await cpuOf(s)) - cpu0;
          if (latencies.length === 0) throw new Error('every clone failed');
          return {
            clones_per_s: latencies.length / wall,
            p50_ms: percentile(latencies, 50),
            p99_ms: percentile(latencies, 99),
            server_cpu_ms: (cpu * 1000) / latencies.length,
            errors: failures,
          };
        } finally {
          await rm(base, { recursive: true, force: true });
        }
      },
      failed,
    );
    return runs;
  },
};

const bigClone: Workload = {
  id: 'big-clone',
  number: 7,
  title: 'clone of a repo with a large pack',
  metrics: MEMORY_METRICS,
  primary: 'seconds',
  describe: (p) =>
    `\`git clone --bare\` of a generated repo whose pack is ${p.bigMb} MiB of incompressible random blobs (pushed into each server once); RSS sampled every 50 ms`,
  async run(ctx) {
    const runs = emptyRuns(ctx.servers);
    const repo = 'bench/big';
    const failed = await setupEach(ctx, runs, async (s) => {
      await s.createRepo(repo);
      const sample = await measured(s, () => push(ctx.fixtures.big, s.url(repo), ['refs/heads/main:refs/heads/main'], BIG_TIMEOUT));
      return {
        load_push_s: sample.seconds!,
        load_push_rss_node_peak_mb: sample.rss_node_peak_mb!,
        load_push_server_cpu_s: sample.server_cpu_s!,
      };
    });
    await alternate(
      ctx,
      runs,
      async (s, r) => {
        const dir = join(ctx.work, `big-clone-${s.id}-${r}.git`);
        try {
          return await measured(s, async () => {
            const res = await git(['clone', '-q', '--bare', s.url(repo), dir], { timeoutMs: BIG_TIMEOUT });
            if (res.code !== 0) throw new Error(`clone failed (${res.code}): ${lastLines(res.stderr)}`);
            return res.ms;
          });
        } finally {
          await rm(dir, { recursive: true, force: true });
        }
      },
      failed,
    );
    return runs;
  },
};

interface ReplicaStatus {
  node: string;
  state: string;
  generation: number | null;
  checksum: string | null;
}
interface RepoStatus {
  generation: number;
  checksum: string;
  replicas: ReplicaStatus[];
}

async function repoStatus(base: string, repoId: string, headers: Record<string, string>): Promise<RepoStatus> {
  const res = await fetch(`${base}/repos/${repoId}`, { headers, signal: AbortSignal.timeout(10_000) });
  if (!res.ok) throw new Error(`GET /repos/${repoId}: ${res.status} ${await res.text()}`);
  return (await res.json()) as RepoStatus;
}

/** waitReplicaInSync polls the repo's status every 50 ms until `node`'s replica is in sync at the current generation. */
async function waitReplicaInSync(
  base: string,
  repoId: string,
  node: string,
  timeoutMs: number,
  headers: Record<string, string>,
): Promise<RepoStatus> {
  const deadline = performance.now() + timeoutMs;
  let last = '';
  for (;;) {
    try {
      const st = await repoStatus(base, repoId, headers);
      const r = st.replicas.find((x) => x.node === node);
      if (r?.state === 'in_sync' && r.generation === st.generation) return st;
      last = JSON.stringify(r ?? null);
    } catch (err) {
      last = errorText(err);
    }
    if (performance.now() > deadline) throw new Error(`${node}'s replica of ${repoId} not in sync after ${timeoutMs} ms: ${last}`);
    await sleep(50);
  }
}

const repair: Workload = {
  id: 'repair',
  number: 8,
  title: 'repair of a replica that missed the mirror push',
  metrics: [
    { name: 'repair_s', unit: 's', better: 'lower' },
    { name: 'restart_to_sync_s', unit: 's', better: 'lower' },
    { name: 'plain_clone_s', unit: 's', better: 'info' },
    { name: 'repair_vs_clone', unit: 'x', better: 'lower' },
  ],
  primary: 'repair_vs_clone',
  describe: () =>
    'clusters only: a new repo on all nodes, the last node killed (SIGKILL), the mirror repo pushed with `--mirror` to the first (quorum 2 of 3), ' +
    'a plain `git clone --mirror` of it from the first node timed (plain_clone_s), then the killed node restarted: repair_s runs from its /health answering to its ' +
    'replica confirmed in sync (polled every 50 ms), restart_to_sync_s from its spawn; repair_vs_clone = repair_s / plain_clone_s',
  async run(ctx) {
    const clusters = ctx.servers.filter(
      (s): s is ServerUnderTest & { nodeControl: NodeControl } => s.nodeControl !== undefined && s.nodes >= 3,
    );
    const runs = emptyRuns(clusters);
    for (let r = 0; r < ctx.params.rounds; r++) {
      for (const s of clusters) {
        const out = runs.get(s.id)!;
        const nc = s.nodeControl;
        const victim = s.nodes - 1;
        const node = `node-${victim + 1}`;
        const repo = `bench/repair-r${r}`;
        const dir = join(ctx.work, `repair-clone-${s.id}-${r}.git`);
        try {
          await s.createRepo(repo);
          await nc.kill(victim);
          await push(ctx.fixtures.mirror, s.url(repo, 0), ['--mirror'], BIG_TIMEOUT);
          const clone = await git(['clone', '-q', '--mirror', s.url(repo, 0), dir], { timeoutMs: BIG_TIMEOUT });
          if (clone.code !== 0) throw new Error(`plain clone failed (${clone.code}): ${lastLines(clone.stderr)}`);
          const { spawnedAt, readyAt } = await nc.restart(victim);
          const st = await waitReplicaInSync(nc.baseUrl(0), repo, node, BIG_TIMEOUT, nc.apiHeaders);
          const syncedAt = performance.now();
          const sums = new Set(st.replicas.filter((x) => x.state === 'in_sync').map((x) => x.checksum));
          if (sums.size !== 1 || !sums.has(st.checksum))
            throw new Error(`replica checksums differ after repair: ${JSON.stringify(st.replicas)}`);
          const plain = clone.ms / 1000;
          const repairS = (syncedAt - readyAt) / 1000;
          out.rounds.push({
            repair_s: repairS,
            restart_to_sync_s: (syncedAt - spawnedAt) / 1000,
            plain_clone_s: plain,
            repair_vs_clone: repairS / plain,
          });
        } catch (err) {
          out.errors.push(`round ${r + 1}: ${errorText(err)}`);
          ctx.log(`  ${s.id}: round ${r + 1} failed: ${errorText(err)}\n${s.logTail().slice(-1500)}`);
          // Leave the cluster whole for the next round.
          await nc.restart(victim).catch(() => undefined);
        } finally {
          await rm(dir, { recursive: true, force: true });
        }
      }
    }
    return runs;
  },
};

/** WORKLOADS are the eight workloads, in report order. */
export const WORKLOADS: readonly Workload[] = [
  pushLatency,
  cloneMirror,
  mirrorPush,
  concurrentRepos,
  concurrentBranches,
  concurrentClones,
  bigClone,
  repair,
];

/**
 * warmUp makes `params.warmup` untimed one-file pushes to each server (a repo of its own,
 * `bench/warmup`), taking turns push by push, before the first workload. The project's nodes
 * run most of a push in JavaScript, which V8 compiles only once it has run often: over the first
 * 300-400 pushes after a start the main threads' CPU per push falls by a quarter (measured on
 * the 3-node cluster, windows of 100 pushes: coordinator 14.8 to 11 ms, peers 8.0 to 6 ms), while
 * node-git-server's, whose push is almost all git, stays where it is (16.3-17.8 ms). The
 * workloads measure servers that have run a while, as in production. Returns the problems met
 * (a server that failed a warm-up push).
 */
export async function warmUp(params: Params, servers: readonly ServerUnderTest[], work: string): Promise<string[]> {
  const n = params.warmup;
  if (n === 0 || servers.length === 0) return [];
  const src = join(work, 'warmup.git');
  const { initial, branch } = await chains(src, 1, n);
  const commits = branch[0]!;
  const problems: string[] = [];
  const live: ServerUnderTest[] = [];
  for (const s of servers) {
    try {
      await s.createRepo('bench/warmup');
      await push(src, s.url('bench/warmup'), [`${initial}:refs/heads/main`]);
      live.push(s);
    } catch (err) {
      problems.push(`${s.id}: warm-up setup: ${errorText(err)}`);
    }
  }
  const failed = new Map<ServerId, number>();
  for (let i = 0; i < n; i++) {
    for (const s of rotate(live, i)) {
      try {
        await push(src, s.url('bench/warmup'), [`${commits[i]!}:refs/heads/main`]);
      } catch (err) {
        const k = (failed.get(s.id) ?? 0) + 1;
        failed.set(s.id, k);
        if (k === 1) problems.push(`${s.id}: warm-up push ${i + 1}: ${errorText(err)}`);
      }
    }
  }
  for (const [id, k] of failed) if (k > 1) problems.push(`${id}: ${k} of ${n} warm-up pushes failed`);
  await rm(src, { recursive: true, force: true });
  return problems;
}

/** selectWorkloads parses `--only` (ids or numbers, comma-separated); undefined means all. */
export function selectWorkloads(only: string | undefined): Workload[] {
  if (!only) return [...WORKLOADS];
  const picked: Workload[] = [];
  for (const part of only
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean)) {
    const w = WORKLOADS.find((x) => x.id === part || String(x.number) === part);
    if (!w) throw new Error(`unknown workload '${part}': use one of ${WORKLOADS.map((x) => `${x.number}|${x.id}`).join(', ')}`);
    if (!picked.includes(w)) picked.push(w);
  }
  return picked.sort((a, b) => a.number - b.number);
}
