import { readdir, readFile } from 'node:fs/promises';

/** CLK_TCK is the kernel's clock tick rate for /proc times (100 on every Linux we run on). */
const CLK_TCK = 100;
const PAGE_KB = 4;

interface ProcStat {
  readonly pid: number;
  readonly ppid: number;
  /** cpuTicks is utime+stime+cutime+cstime: the process and the children it already reaped. */
  readonly cpuTicks: number;
  readonly rssKb: number;
}

function parseStat(pid: number, text: string): ProcStat | null {
  const close = text.lastIndexOf(')');
  if (close < 0) return null;
  // Fields after the command: state(3) ppid(4) ... utime(14) stime(15) cutime(16) cstime(17) ... rss(24).
  const f = text.slice(close + 2).split(' ');
  const n = (i: number): number => Number(f[i - 3] ?? 0);
  if (f[0] === 'Z') return { pid, ppid: n(4), cpuTicks: 0, rssKb: 0 };
  return { pid, ppid: n(4), cpuTicks: n(14) + n(15) + n(16) + n(17), rssKb: n(24) * PAGE_KB };
}

/** scan reads /proc/<pid>/stat of every process (a few hundred at most on a test machine). */
async function scan(): Promise<Map<number, ProcStat>> {
  const out = new Map<number, ProcStat>();
  const pids = (await readdir('/proc').catch(() => [] as string[])).filter((p) => /^\d+$/.test(p));
  await Promise.all(
    pids.map(async (p) => {
      const text = await readFile(`/proc/${p}/stat`, 'utf8').catch(() => '');
      const s = text ? parseStat(Number(p), text) : null;
      if (s) out.set(s.pid, s);
    }),
  );
  return out;
}

/** treesOf maps each root pid to the pids of its process tree (itself included). */
function treesOf(all: Map<number, ProcStat>, roots: readonly number[]): Map<number, number[]> {
  const kids = new Map<number, number[]>();
  for (const s of all.values()) {
    const list = kids.get(s.ppid);
    if (list) list.push(s.pid);
    else kids.set(s.ppid, [s.pid]);
  }
  const out = new Map<number, number[]>();
  for (const root of roots) {
    const tree: number[] = [];
    const stack = all.has(root) ? [root] : [];
    for (let guard = 0; stack.length > 0 && guard < 100_000; guard++) {
      const p = stack.pop()!;
      tree.push(p);
      for (const k of kids.get(p) ?? []) stack.push(k);
    }
    out.set(root, tree);
  }
  return out;
}

/** descendants lists every live process below `root` (children before grandchildren), root excluded. */
export async function descendants(root: number): Promise<number[]> {
  const all = await scan();
  return (treesOf(all, [root]).get(root) ?? []).filter((p) => p !== root);
}

/** TreeUsage is the memory and CPU of a set of process trees at one instant. */
export interface TreeUsage {
  /** rssKb is the RSS summed over every process of every tree. */
  readonly rssKb: number;
  /** rssByRootKb is the RSS of each root's tree. */
  readonly rssByRootKb: number[];
  /** cpuS is the CPU seconds used so far by the trees (live processes plus the children they reaped). */
  readonly cpuS: number;
  readonly processes: number;
}

/** usage measures the process trees of `roots` now. */
export async function usage(roots: readonly number[]): Promise<TreeUsage> {
  const all = await scan();
  const trees = treesOf(all, roots);
  let rss = 0;
  let ticks = 0;
  let processes = 0;
  const byRoot: number[] = [];
  for (const root of roots) {
    let treeRss = 0;
    for (const p of trees.get(root) ?? []) {
      const s = all.get(p)!;
      treeRss += s.rssKb;
      ticks += s.cpuTicks;
      processes++;
    }
    byRoot.push(treeRss);
    rss += treeRss;
  }
  return { rssKb: rss, rssByRootKb: byRoot, cpuS: ticks / CLK_TCK, processes };
}

/** RssPeak is what an RssSampler saw. */
export interface RssPeak {
  /** baseMb is the trees' RSS when sampling started. */
  readonly baseMb: number;
  /** peakMb is the largest RSS summed over all trees at one instant. */
  readonly peakMb: number;
  /** peakPerRootMb is the largest RSS of any single root's tree (one node of a cluster). */
  readonly peakPerRootMb: number;
  /** peakAnonMb is the largest anonymous (heap, not file-backed) RSS summed over all trees. */
  readonly peakAnonMb: number;
  /** peakAnonPerRootMb is the largest anonymous RSS of any single root's tree. */
  readonly peakAnonPerRootMb: number;
  readonly samples: number;
}

async function anonKb(pids: readonly number[]): Promise<number> {
  let kb = 0;
  await Promise.all(
    pids.map(async (p) => {
      const text = await readFile(`/proc/${p}/status`, 'utf8').catch(() => '');
      const m = /^RssAnon:\s+(\d+) kB/m.exec(text);
      if (m) kb += Number(m[1]);
    }),
  );
  return kb;
}

/**
 * RssSampler samples the RSS of process trees every `intervalMs` (default 50 ms) from /proc
 * until stopped, and keeps the peaks. It runs on the benchmark's event loop, which is idle
 * while git clients (separate processes) do the work.
 */
export class RssSampler {
  private timer: NodeJS.Timeout | null = null;
  private busy = false;
  private base = -1;
  private peak = 0;
  private peakRoot = 0;
  private peakAnon = 0;
  private peakAnonRoot = 0;
  private samples = 0;

  constructor(
    private readonly roots: () => readonly number[],
    private readonly intervalMs = 50,
  ) {}

  private async sample(): Promise<void> {
    if (this.busy) return;
    this.busy = true;
    try {
      const all = await scan();
      const trees = treesOf(all, this.roots());
      let total = 0;
      let anon = 0;
      for (const tree of trees.values()) {
        let t = 0;
        for (const p of tree) t += all.get(p)?.rssKb ?? 0;
        total += t;
        this.peakRoot = Math.max(this.peakRoot, t);
        const a = await anonKb(tree);
        anon += a;
        this.peakAnonRoot = Math.max(this.peakAnonRoot, a);
      }
      if (this.base < 0) this.base = total;
      this.peak = Math.max(this.peak, total);
      this.peakAnon = Math.max(this.peakAnon, anon);
      this.samples++;
    } finally {
      this.busy = false;
    }
  }

  /** start takes a first sample and keeps sampling. */
  async start(): Promise<void> {
    await this.sample();
    this.timer = setInterval(() => {
      void this.sample();
    }, this.intervalMs);
  }

  /** stop takes a last sample and returns the peaks. */
  async stop(): Promise<RssPeak> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    for (let i = 0; i < 100 && this.busy; i++) await new Promise((r) => setTimeout(r, 5));
    await this.sample();
    const mb = (kb: number): number => Math.round(kb / 102.4) / 10;
    return {
      baseMb: mb(this.base),
      peakMb: mb(this.peak),
      peakPerRootMb: mb(this.peakRoot),
      peakAnonMb: mb(this.peakAnon),
      peakAnonPerRootMb: mb(this.peakAnonRoot),
      samples: this.samples,
    };
  }
}
