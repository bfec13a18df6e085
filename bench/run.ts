import { access, mkdir, readdir, readFile, readlink, rm, writeFile } from 'node:fs/promises';
import { availableParallelism, cpus, loadavg, release, totalmem } from 'node:os';
import { join, resolve } from 'node:path';
import { bigRepo, defaultBundle, expressMirror, miniMirror, repoStats, smallHistory } from './fixtures.js';
import { renderMarkdown, renderText, summarize, targets, type BenchResult, type Machine, type WorkloadResult } from './report.js';
import { SERVER_DESCRIPTIONS, SERVER_IDS, snapshotApp, startServer, type ServerId, type ServerUnderTest } from './servers.js';
import { errorText, git, tempDir } from './util.js';
import { FULL, QUICK, selectWorkloads, warmUp, type Fixtures, type Params } from './workloads.js';

/** BenchOptions are the `bench` command's options. */
export interface BenchOptions {
  /** quick runs a tiny version of everything (CI smoke check). */
  readonly quick?: boolean;
  /** rounds per workload (default 3, or 1 with quick). */
  readonly rounds?: number;
  /** clients of the concurrent push workloads (4 and 5; default 16, 2 with quick). */
  readonly clients?: number;
  /** pushesPerClient: pushes each client of workloads 4 and 5 makes, one after another (default 4, 1 with quick). */
  readonly pushesPerClient?: number;
  /** warmup: untimed pushes each server takes before the first workload (default 300, 2 with quick; 0: none). */
  readonly warmup?: number;
  /** out is the directory for `bench-<timestamp>.json` and `.md` (default bench/results). */
  readonly out?: string;
  /** only is a comma-separated list of workload ids or numbers. */
  readonly only?: string;
  /** servers restricts the servers under test (default all four). */
  readonly servers?: readonly ServerId[];
  /** logLevel is the project nodes' log level (default warn). */
  readonly logLevel?: string;
  /** log receives progress lines (default stderr). */
  readonly log?: (line: string) => void;
  /** print receives the final table (default stdout). */
  readonly print?: (text: string) => void;
}

/** BenchRun is a finished run and where it was written. */
export interface BenchRun {
  readonly result: BenchResult;
  readonly jsonPath: string;
  readonly mdPath: string;
}

async function machine(): Promise<Omit<Machine, 'loadavgEnd'>> {
  const gitVersion = (await git(['--version'])).stdout.trim();
  return {
    nproc: availableParallelism(),
    cpuModel: cpus()[0]?.model ?? 'unknown',
    memTotalMb: Math.round(totalmem() / 1_048_576),
    kernel: release(),
    gitVersion,
    nodeVersion: process.version,
    loadavgStart: loadavg(),
  };
}

/**
 * leftovers finds processes still running from inside `root` (by command line or working
 * directory): every server process and every git it started lives there, so after the servers
 * are stopped this must be empty. Any found are killed.
 */
async function killLeftovers(root: string): Promise<number> {
  let killed = 0;
  for (const p of (await readdir('/proc').catch(() => [] as string[])).filter((x) => /^\d+$/.test(x))) {
    if (Number(p) === process.pid) continue;
    const cmd = await readFile(`/proc/${p}/cmdline`, 'utf8').catch(() => '');
    const cwd = await readlink(`/proc/${p}/cwd`).catch(() => '');
    if (cmd.includes(root) || cwd === root || cwd.startsWith(`${root}/`)) {
      try {
        process.kill(Number(p), 'SIGKILL');
        killed++;
      } catch {
        // gone
      }
    }
  }
  return killed;
}

/** runBench runs the benchmark suite, writes `<out>/bench-<timestamp>.json` and `.md`, and prints the table. */
export async function runBench(opts: BenchOptions = {}): Promise<BenchRun> {
  const log = opts.log ?? ((line: string) => process.stderr.write(`${line}\n`));
  const print = opts.print ?? ((text: string) => process.stdout.write(`${text}\n`));
  const quick = opts.quick ?? false;
  const rounds = opts.rounds ?? (quick ? 1 : 3);
  if (!Number.isInteger(rounds) || rounds < 1 || rounds > 50) throw new Error('--rounds must be an integer 1-50');
  if (opts.clients !== undefined && (!Number.isInteger(opts.clients) || opts.clients < 1 || opts.clients > 256))
    throw new Error('--clients must be an integer 1-256');
  if (
    opts.pushesPerClient !== undefined &&
    (!Number.isInteger(opts.pushesPerClient) || opts.pushesPerClient < 1 || opts.pushesPerClient > 1000)
  )
    throw new Error('--pushes-per-client must be an integer 1-1000');
  if (opts.warmup !== undefined && (!Number.isInteger(opts.warmup) || opts.warmup < 0 || opts.warmup > 10_000))
    throw new Error('--warmup must be an integer 0-10000');
  const params: Params = {
    ...(quick ? QUICK : FULL),
    rounds,
    ...(opts.clients ? { concurrency: opts.clients } : {}),
    ...(opts.pushesPerClient ? { pushesPerClient: opts.pushesPerClient } : {}),
    ...(opts.warmup !== undefined ? { warmup: opts.warmup } : {}),
  };
  const workloads = selectWorkloads(opts.only);
  const serverIds = opts.servers ?? SERVER_IDS;
  const startedAt = new Date();
  const t0 = performance.now();
  const facts = await machine();
  const problems: string[] = [];
  const stamp = (): string => `[bench ${((performance.now() - t0) / 1000).toFixed(0).padStart(4)} s]`;
  const say = (line: string): void => log(`${stamp()} ${line}`);

  const root = await tempDir('gitrep-bench-');
  const work = join(root, 'work');
  await mkdir(work, { recursive: true });
  const servers: ServerUnderTest[] = [];
  let stopping: Promise<void> | null = null;
  const stopAll = (): Promise<void> => {
    stopping ??= (async () => {
      await Promise.all(
        servers.map((s) =>
          s.stop().catch((err: unknown) => {
            problems.push(`stopping ${s.id}: ${errorText(err)}`);
          }),
        ),
      );
      const killed = await killLeftovers(root);
      if (killed > 0) problems.push(`${killed} process(es) were still running after the servers stopped and were killed`);
      await rm(root, { recursive: true, force: true });
    })();
    return stopping;
  };
  const onSignal = (sig: NodeJS.Signals): void => {
    log(`${sig}: stopping the servers`);
    void stopAll().finally(() => process.exit(130));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);

  const results: WorkloadResult[] = [];
  const started = new Map<ServerId, boolean>();
  const fixtureFacts: Record<string, string | number> = {};
  const logTails: Partial<Record<ServerId, string>> = {};
  try {
    say(`preparing fixtures (cached under os.tmpdir()) and starting ${serverIds.join(', ')}`);
    const needMirror = workloads.some((w) => w.id === 'clone-mirror' || w.id === 'mirror-push' || w.id === 'repair');
    const needBig = workloads.some((w) => w.id === 'big-clone');
    const fixturesP = (async (): Promise<Fixtures> => {
      let mirror = '';
      let mirrorName = 'none';
      if (needMirror) {
        const bundle = defaultBundle();
        const haveBundle = await access(bundle).then(
          () => true,
          () => false,
        );
        if (!quick && haveBundle) {
          mirror = await expressMirror(bundle);
          mirrorName = 'express';
        } else {
          if (!quick)
            problems.push(
              `express bundle not found at ${bundle} (set BENCH_EXPRESS_BUNDLE): the mirror workloads used the small generated stand-in`,
            );
          mirror = await miniMirror();
          mirrorName = 'mini (generated stand-in for express)';
        }
      }
      const ms = mirror ? await repoStats(mirror) : { refs: 0, packMb: 0 };
      const big = needBig ? await bigRepo(params.bigMb) : '';
      const bs = big ? await repoStats(big) : { refs: 0, packMb: 0 };
      const small = join(work, 'small.git');
      await smallHistory(small, 20);
      return { mirror, mirrorName, mirrorRefs: ms.refs, mirrorPackMb: ms.packMb, big, bigPackMb: bs.packMb, small };
    })();
    const dist = await snapshotApp(join(root, 'app'));
    const startedServers = await Promise.all(
      serverIds.map(async (id) => {
        const dir = join(root, id);
        await mkdir(dir, { recursive: true });
        try {
          const s = await startServer(id, dir, { dist, logLevel: opts.logLevel });
          started.set(id, true);
          return s;
        } catch (err) {
          started.set(id, false);
          problems.push(`${id} did not start: ${errorText(err).slice(0, 2000)}`);
          return null;
        }
      }),
    );
    for (const s of startedServers) if (s) servers.push(s);
    // Keep the report's server order fixed.
    servers.sort((a, b) => SERVER_IDS.indexOf(a.id) - SERVER_IDS.indexOf(b.id));
    const fixtures = await fixturesP;
    Object.assign(fixtureFacts, {
      mirror: fixtures.mirrorName,
      mirror_refs: fixtures.mirrorRefs,
      mirror_pack_mb: fixtures.mirrorPackMb,
      big_pack_mb: fixtures.bigPackMb,
      small_commits: 20,
    });
    say(`fixtures ready (${JSON.stringify(fixtureFacts)}); servers up: ${servers.map((s) => s.id).join(', ')}`);
    if (params.warmup > 0) {
      const w0 = performance.now();
      for (const p of await warmUp(params, servers, work)) problems.push(`warm-up: ${p}`);
      say(`warm-up: ${params.warmup} untimed pushes to each server in ${((performance.now() - w0) / 1000).toFixed(0)} s`);
    }

    for (const w of workloads) {
      const description = w.describe(params);
      say(`workload ${w.number} ${w.id}: ${description}`);
      const w0 = performance.now();
      const runs = await w.run({ params, servers, work, fixtures, log: say });
      const res = summarize(w, description, runs, (performance.now() - w0) / 1000);
      results.push(res);
      say(
        `workload ${w.number} ${w.id} done in ${res.durationS.toFixed(0)} s: ${Object.entries(res.servers)
          .map(([id, s]) => `${id} ${w.primary}=${s.median[w.primary] ?? '-'}`)
          .join(', ')}`,
      );
    }
  } finally {
    for (const s of servers) logTails[s.id] = s.logTail();
    say('stopping the servers');
    await stopAll();
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }

  // A workload that applies to some servers only (repair: clusters) lists just those.
  const complete =
    serverIds.every((id) => started.get(id) === true) &&
    results.every((w) => Object.values(w.servers).length > 0 && Object.values(w.servers).every((s) => s.rounds.length > 0));
  const finishedAt = new Date();
  const result: BenchResult = {
    schema: 1,
    mode: quick ? 'quick' : 'full',
    startedAt: startedAt.toISOString(),
    finishedAt: finishedAt.toISOString(),
    durationS: Math.round((finishedAt.getTime() - startedAt.getTime()) / 100) / 10,
    params,
    machine: { ...facts, loadavgEnd: loadavg() },
    servers: serverIds.map((id) => ({ id, description: SERVER_DESCRIPTIONS[id], started: started.get(id) === true })),
    fixtures: fixtureFacts,
    workloads: results,
    targets: targets(results, params, facts.nproc),
    complete,
    problems,
    serverLogs: Object.fromEntries(
      serverIds
        .filter((id) => results.some((w) => (w.servers[id]?.errors.length ?? 0) > 0) && logTails[id])
        .map((id) => [id, logTails[id]!]),
    ),
  };
  const outDir = resolve(opts.out ?? 'bench/results');
  await mkdir(outDir, { recursive: true });
  const base = `bench-${startedAt.toISOString().replace(/[:.]/g, '-')}`;
  const jsonPath = join(outDir, `${base}.json`);
  const mdPath = join(outDir, `${base}.md`);
  await writeFile(jsonPath, `${JSON.stringify(result, null, 2)}\n`);
  await writeFile(mdPath, renderMarkdown(result));
  print(renderText(result));
  print(`\nwrote ${jsonPath}\n      ${mdPath}`);
  return { result, jsonPath, mdPath };
}
