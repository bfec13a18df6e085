import type { ServerId } from './servers.js';
import { SERVER_IDS } from './servers.js';
import { median } from './util.js';
import type { MetricDef, Params, Sample, ServerRuns, Workload, WorkloadId } from './workloads.js';

/** Machine is where a run happened: the facts a reader needs to compare runs. */
export interface Machine {
  readonly nproc: number;
  readonly cpuModel: string;
  readonly memTotalMb: number;
  readonly kernel: string;
  readonly gitVersion: string;
  readonly nodeVersion: string;
  readonly loadavgStart: number[];
  readonly loadavgEnd: number[];
}

/** ServerResult is one server's rounds in one workload and their medians. */
export interface ServerResult {
  readonly rounds: Sample[];
  readonly median: Record<string, number | null>;
  readonly errors: string[];
  readonly setup: Record<string, number>;
}

/** Ratios divide a server's medians by the single node's and node-git-server's (same metric, same run). */
export interface Ratios {
  readonly vs_single: Record<string, number | null>;
  readonly vs_node_git_server: Record<string, number | null>;
}

/** WorkloadResult is one workload's outcome on every server. */
export interface WorkloadResult {
  readonly id: WorkloadId;
  readonly number: number;
  readonly title: string;
  readonly description: string;
  readonly primary: string;
  readonly metrics: readonly MetricDef[];
  readonly durationS: number;
  readonly servers: Partial<Record<ServerId, ServerResult>>;
  readonly ratios: Partial<Record<ServerId, Ratios>>;
}

/** Target is one of the project's performance targets, evaluated on this run's ratios (never absolute times). */
export interface Target {
  readonly name: string;
  readonly target: string;
  readonly value: number | null;
  readonly met: boolean | null;
  readonly note?: string;
}

/** BenchResult is the whole run, as written to `bench-<timestamp>.json`. */
export interface BenchResult {
  readonly schema: 1;
  readonly mode: 'quick' | 'full';
  readonly startedAt: string;
  readonly finishedAt: string;
  readonly durationS: number;
  readonly params: Params;
  readonly machine: Machine;
  readonly servers: ReadonlyArray<{ id: ServerId; description: string; started: boolean }>;
  readonly fixtures: Record<string, string | number>;
  readonly workloads: WorkloadResult[];
  readonly targets: Target[];
  /** complete says every selected workload produced at least one round on every server. */
  readonly complete: boolean;
  readonly problems: string[];
  /** serverLogs keeps the end of each server's output when it had errors (the nodes log at warn). */
  readonly serverLogs: Partial<Record<ServerId, string>>;
}

const round3 = (x: number): number => Number(x.toPrecision(4));

/** summarize turns a workload's raw runs into medians and ratios. */
export function summarize(w: Workload, description: string, runs: Map<ServerId, ServerRuns>, durationS: number): WorkloadResult {
  const servers: Partial<Record<ServerId, ServerResult>> = {};
  for (const [id, r] of runs) {
    const med: Record<string, number | null> = {};
    for (const m of w.metrics) {
      const v = median(r.rounds.map((s) => s[m.name] ?? Number.NaN));
      med[m.name] = Number.isFinite(v) ? round3(v) : null;
    }
    servers[id] = {
      rounds: r.rounds.map((s) => Object.fromEntries(Object.entries(s).map(([k, v]) => [k, round3(v)]))),
      median: med,
      errors: r.errors,
      setup: r.setup,
    };
  }
  const ratio = (a: number | null | undefined, b: number | null | undefined): number | null =>
    a === null || a === undefined || b === null || b === undefined || b === 0 ? null : Math.round((a / b) * 100) / 100;
  const ratios: Partial<Record<ServerId, Ratios>> = {};
  for (const id of Object.keys(servers) as ServerId[]) {
    const mine = servers[id]!.median;
    const single = servers.single?.median;
    const ngs = servers['node-git-server']?.median;
    ratios[id] = {
      vs_single: Object.fromEntries(w.metrics.map((m) => [m.name, ratio(mine[m.name], single?.[m.name])])),
      vs_node_git_server: Object.fromEntries(w.metrics.map((m) => [m.name, ratio(mine[m.name], ngs?.[m.name])])),
    };
  }
  return { id: w.id, number: w.number, title: w.title, description, primary: w.primary, metrics: w.metrics, durationS, servers, ratios };
}

function med(res: readonly WorkloadResult[], id: WorkloadId, server: ServerId, metric: string): number | null {
  return res.find((w) => w.id === id)?.servers[server]?.median[metric] ?? null;
}

/** targets evaluates the project's targets on one run's ratios. */
export function targets(res: readonly WorkloadResult[], params: Params, nproc: number): Target[] {
  const out: Target[] = [];
  const div = (a: number | null, b: number | null): number | null =>
    a === null || b === null || b === 0 ? null : Math.round((a / b) * 100) / 100;
  const add = (name: string, target: string, value: number | null, ok: (v: number) => boolean, note?: string): void => {
    out.push({ name, target, value, met: value === null ? null : ok(value), note });
  };
  if (res.some((w) => w.id === 'push-latency')) {
    add(
      'small push p50, cluster3 / single',
      '<= 1.3',
      div(med(res, 'push-latency', 'cluster3', 'p50_ms'), med(res, 'push-latency', 'single', 'p50_ms')),
      (v) => v <= 1.3,
    );
    // Summed over every node and every request of a push: client auth and peer signatures.
    add('auth checks per push, cluster3 (ms, all nodes)', '<= 2', med(res, 'push-latency', 'cluster3', 'auth_ms'), (v) => v <= 2);
  }
  // Issue #15's targets: a replicated push at the cost of an unreplicated one (node-git-server).
  const vsNgs = (id: WorkloadId, server: ServerId, metric: string): number | null =>
    div(med(res, id, server, metric), med(res, id, 'node-git-server', metric));
  if (res.some((w) => w.id === 'push-latency')) {
    add('small push p50, cluster3 / node-git-server', '<= 1.5', vsNgs('push-latency', 'cluster3', 'p50_ms'), (v) => v <= 1.5);
    add('small push p50, single / node-git-server', '<= 1.15', vsNgs('push-latency', 'single', 'p50_ms'), (v) => v <= 1.15);
    add(
      'server CPU per small push, cluster3 / node-git-server',
      '<= 2.5',
      vsNgs('push-latency', 'cluster3', 'server_cpu_ms'),
      (v) => v <= 2.5,
    );
  }
  if (res.some((w) => w.id === 'mirror-push')) {
    add(
      '`push --mirror` of express, cluster3 / node-git-server (s)',
      '<= 1.5',
      vsNgs('mirror-push', 'cluster3', 'seconds'),
      (v) => v <= 1.5,
    );
    add(
      'clone right after the mirror push, cluster3 / node-git-server (s)',
      '<= 1.1',
      vsNgs('mirror-push', 'cluster3', 'clone_after_s'),
      (v) => v <= 1.1,
    );
  }
  if (res.some((w) => w.id === 'concurrent-repos'))
    add(
      `${params.concurrency} clients on ${params.concurrency} repos, cluster3 / node-git-server (pushes/s)`,
      '>= 0.8',
      vsNgs('concurrent-repos', 'cluster3', 'pushes_per_s'),
      (v) => v >= 0.8,
    );
  if (res.some((w) => w.id === 'concurrent-branches')) {
    const n = params.concurrency;
    add(
      `${n} clients on one repo, cluster3 / node-git-server (pushes/s)`,
      '>= 0.8',
      vsNgs('concurrent-branches', 'cluster3', 'pushes_per_s'),
      (v) => v >= 0.8,
    );
    add(
      `${n} clients on one repo, cluster3 / node-git-server (p99)`,
      '<= 3',
      vsNgs('concurrent-branches', 'cluster3', 'p99_ms'),
      (v) => v <= 3,
    );
    add(`${n} clients on one repo, cluster3: failed pushes`, '0', med(res, 'concurrent-branches', 'cluster3', 'errors'), (v) => v === 0);
  }
  if (res.some((w) => w.id === 'concurrent-clones')) {
    for (const s of ['cluster3', 'single'] as const) {
      add(
        `clone throughput (concurrent small clones), ${s} / node-git-server`,
        '>= 0.95',
        div(med(res, 'concurrent-clones', s, 'clones_per_s'), med(res, 'concurrent-clones', 'node-git-server', 'clones_per_s')),
        (v) => v >= 0.95,
      );
    }
  }
  if (res.some((w) => w.id === 'clone-mirror')) {
    for (const s of ['cluster3', 'single'] as const) {
      add(
        `clone throughput (mirror clone, 1/seconds), ${s} / node-git-server`,
        '>= 0.95',
        div(med(res, 'clone-mirror', 'node-git-server', 'seconds'), med(res, 'clone-mirror', s, 'seconds')),
        (v) => v >= 0.95,
      );
    }
  }
  if (res.some((w) => w.id === 'big-clone')) {
    const note = params.bigMb < 200 ? `only a ${params.bigMb} MiB pack in this run: not the 200 MB case` : undefined;
    for (const s of ['cluster3', 'single'] as const) {
      add(
        `server RSS during the ${params.bigMb} MiB clone, ${s} (MB, serving node's process tree, all RSS incl. mmapped pack pages)`,
        '< 150',
        med(res, 'big-clone', s, 'rss_node_peak_mb'),
        (v) => v < 150,
        note,
      );
      add(
        `server anonymous RSS during the ${params.bigMb} MiB clone, ${s} (MB, serving node's process tree, heap only)`,
        '< 150',
        med(res, 'big-clone', s, 'rss_node_anon_peak_mb'),
        (v) => v < 150,
        note,
      );
    }
  }
  if (res.some((w) => w.id === 'repair')) {
    add(
      'repair of a replica that missed the mirror push, cluster3: seconds / plain `git clone --mirror` seconds',
      '<= 1.5',
      med(res, 'repair', 'cluster3', 'repair_vs_clone'),
      (v) => v <= 1.5,
    );
  }
  if (res.some((w) => w.id === 'concurrent-repos') && res.some((w) => w.id === 'push-latency')) {
    for (const s of ['cluster3', 'single'] as const) {
      const perS = med(res, 'concurrent-repos', s, 'pushes_per_s');
      const seqMs = med(res, 'push-latency', s, 'mean_ms');
      const speedup = perS === null || seqMs === null ? null : Math.round(perS * (seqMs / 1000) * 100) / 100;
      add(
        `concurrent pushes to ${params.concurrency} repos, ${s}: speedup over one client (pushes/s x sequential mean latency)`,
        `>= 0.75 x nproc (${0.75 * nproc})`,
        speedup,
        (v) => v >= 0.75 * nproc,
        `nproc=${nproc}; the git clients share these cores`,
      );
    }
  }
  return out;
}

/** fmt renders a number with about 3 significant digits. */
export function fmt(v: number | null | undefined): string {
  if (v === null || v === undefined || !Number.isFinite(v)) return '-';
  const a = Math.abs(v);
  if (a >= 100) return v.toFixed(0);
  if (a >= 10) return v.toFixed(1);
  if (a >= 1) return v.toFixed(2);
  if (a === 0) return '0';
  return v.toPrecision(2);
}

function ratioText(v: number | null | undefined): string {
  return v === null || v === undefined ? '-' : `${v.toFixed(2)}x`;
}

type Table = { head: string[]; rows: string[][] };

function mediansTable(r: BenchResult): Table {
  const ids = SERVER_IDS.filter((id) => r.servers.some((s) => s.id === id));
  const rows: string[][] = [];
  for (const w of r.workloads) {
    for (const m of w.metrics) {
      rows.push([
        `${w.number} ${w.id}`,
        `${m.name} (${m.unit})${m.better === 'lower' ? ' ↓' : m.better === 'higher' ? ' ↑' : ''}`,
        ...ids.map((id) => fmt(w.servers[id]?.median[m.name])),
      ]);
    }
  }
  return { head: ['workload', 'metric (↓ lower / ↑ higher is better)', ...ids], rows };
}

function ratiosTable(r: BenchResult): Table {
  const rows: string[][] = [];
  for (const w of r.workloads) {
    for (const m of w.metrics) {
      if (m.name === 'errors') continue;
      rows.push([
        `${w.number} ${w.id}`,
        m.name,
        ratioText(w.ratios.cluster3?.vs_single[m.name]),
        ratioText(w.ratios.cluster3?.vs_node_git_server[m.name]),
        ratioText(w.ratios.single?.vs_node_git_server[m.name]),
        ratioText(w.ratios['http-backend']?.vs_node_git_server[m.name]),
      ]);
    }
  }
  return { head: ['workload', 'metric', 'cluster3/single', 'cluster3/ngs', 'single/ngs', 'http-backend/ngs'], rows };
}

function targetsTable(r: BenchResult): Table {
  return {
    head: ['target', 'wanted', 'this run', 'met'],
    rows: r.targets.map((t) => [
      t.name + (t.note ? ` (${t.note})` : ''),
      t.target,
      fmt(t.value),
      t.met === null ? 'n/a' : t.met ? 'yes' : 'NO',
    ]),
  };
}

function textTable(t: Table): string {
  const widths = t.head.map((h, i) => Math.max(h.length, ...t.rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]): string => cells.map((c, i) => (i < 2 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ');
  return [line(t.head), widths.map((w) => '-'.repeat(w)).join('  '), ...t.rows.map(line)].join('\n');
}

function mdTable(t: Table): string {
  const esc = (s: string): string => s.replace(/\|/g, '\\|');
  return [
    `| ${t.head.map(esc).join(' | ')} |`,
    `|${t.head.map((_, i) => (i < 2 ? ' --- ' : ' ---: ')).join('|')}|`,
    ...t.rows.map((r) => `| ${r.map(esc).join(' | ')} |`),
  ].join('\n');
}

/** renderText is the table the CLI prints: medians, ratios, targets. */
export function renderText(r: BenchResult): string {
  const parts = [
    `git-replication bench (${r.mode}, ${r.params.rounds} round(s), ${r.durationS.toFixed(0)} s, warm-up ${r.params.warmup ?? 0} pushes per server) on ${r.machine.nproc} cores, git ${r.machine.gitVersion}, node ${r.machine.nodeVersion}`,
    '',
    'medians:',
    textTable(mediansTable(r)),
    '',
    'ratios (same run; for ↓ metrics below 1 is better, for ↑ above 1):',
    textTable(ratiosTable(r)),
  ];
  if (r.targets.length > 0) parts.push('', 'targets:', textTable(targetsTable(r)));
  const errs = errorLines(r);
  if (errs.length > 0) parts.push('', 'errors:', ...errs);
  if (r.problems.length > 0) parts.push('', 'problems:', ...r.problems.map((p) => `  ${p}`));
  parts.push('', r.complete ? 'every workload ran on every server' : 'INCOMPLETE: some workload did not run on some server');
  return parts.join('\n');
}

function errorLines(r: BenchResult): string[] {
  const out: string[] = [];
  for (const w of r.workloads) {
    for (const [id, s] of Object.entries(w.servers)) {
      if (s.errors.length > 0)
        out.push(
          `  ${w.id} on ${id}: ${s.errors.length} error message(s) kept (at most 20 per workload and server; see the errors metric for counts), first: ${s.errors[0]!.slice(0, 400)}`,
        );
    }
  }
  return out;
}

/** warmupLine says how warm the servers were when the workloads began. */
function warmupLine(warmup: number | undefined): string {
  return warmup
    ? `Each server took ${warmup} untimed one-file pushes before the first workload (\`--warmup\`).`
    : 'The workloads began right after the servers started (no warm-up).';
}

/** renderMarkdown is the `bench-<timestamp>.md` report. */
export function renderMarkdown(r: BenchResult): string {
  const m = r.machine;
  const out: string[] = [
    `# git-replication benchmark, ${r.startedAt}`,
    '',
    `Mode **${r.mode}**, ${r.params.rounds} round(s), ${r.durationS.toFixed(0)} s. Medians over rounds; ratios are between servers measured in the same run, alternating. ${warmupLine(r.params.warmup)}`,
    '',
    `Machine: ${m.nproc} cores (${m.cpuModel}), ${m.memTotalMb} MB RAM, Linux ${m.kernel}, ${m.gitVersion}, node ${m.nodeVersion}; load average ${m.loadavgStart.map((x) => x.toFixed(2)).join(' ')} at start, ${m.loadavgEnd.map((x) => x.toFixed(2)).join(' ')} at end.`,
    '',
    '## Servers',
    '',
    ...r.servers.map((s) => `- **${s.id}**: ${s.description}${s.started ? '' : ' — FAILED TO START'}`),
    '',
    '## Workloads',
    '',
    ...r.workloads.map((w) => `${w.number}. **${w.id}** (${w.durationS.toFixed(0)} s): ${w.description}`),
    '',
    `Fixtures: ${Object.entries(r.fixtures)
      .map(([k, v]) => `${k}=${v}`)
      .join(', ')}`,
    '',
    '## Medians',
    '',
    mdTable(mediansTable(r)),
    '',
    '## Ratios',
    '',
    'For ↓ metrics (times, memory) below 1.00x is better; for ↑ metrics (throughput) above 1.00x is better.',
    '',
    mdTable(ratiosTable(r)),
    '',
  ];
  if (r.targets.length > 0) out.push('## Targets', '', mdTable(targetsTable(r)), '');
  const setups: string[] = [];
  for (const w of r.workloads) {
    for (const [id, s] of Object.entries(w.servers)) {
      if (Object.keys(s.setup).length > 0)
        setups.push(
          `- ${w.id} on ${id}: ${Object.entries(s.setup)
            .map(([k, v]) => `${k}=${fmt(v)}`)
            .join(', ')}`,
        );
    }
  }
  if (setups.length > 0) out.push('## One-off setup measurements', '', ...setups, '');
  const errs = errorLines(r);
  if (errs.length > 0) out.push('## Errors', '', ...errs.map((e) => `- ${e.trim()}`), '');
  if (r.problems.length > 0) out.push('## Problems', '', ...r.problems.map((p) => `- ${p}`), '');
  return `${out.join('\n')}\n`;
}
