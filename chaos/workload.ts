/**
 * The chaos workload: clients that drive a cluster with the real `git` CLI and record every
 * operation (start, end, outcome) in a history for the checker.
 *
 * Every push is a compare-and-swap the client states explicitly (`--force-with-lease=<ref>:<old>`),
 * so the history knows exactly which old value the server compared. Commits are made with
 * plumbing (hash-object, mktree, commit-tree) in a bare work repo per client and repo, so their
 * parents are known exactly: that is the ancestry the checker's durability check uses.
 */
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { runGit, type GitCall } from './gitcli.js';
import { ZERO, type Op, type Outcome, type PushOp, type ReadOp } from './history.js';
import type { Rng } from './rng.js';

/** SHARED_BRANCHES every client works on: main only moves forward; dev is also force-pushed. */
export const SHARED_BRANCHES = ['main', 'dev'] as const;

/** Recorder collects a run's history with a monotonic clock. */
export class Recorder {
  readonly ops: Op[] = [];
  private nextId = 1;
  private readonly t0 = performance.now();

  /** now is milliseconds since the recorder started (monotonic). */
  now(): number {
    return performance.now() - this.t0;
  }

  addPush(op: Omit<PushOp, 'id' | 'kind'>): PushOp {
    const full: PushOp = { kind: 'push', id: this.nextId++, ...op };
    this.ops.push(full);
    return full;
  }

  addRead(op: Omit<ReadOp, 'id' | 'kind'>): ReadOp {
    const full: ReadOp = { kind: 'read', id: this.nextId++, ...op };
    this.ops.push(full);
    return full;
  }
}

/** ClusterView is what clients need of the cluster: URLs and which node to talk to. */
export interface ClusterView {
  /** repoUrl is the clone URL of `repo` on node `i` (1-based). */
  repoUrl(i: number, repo: string): string;
  /** pickNode chooses a node for the next operation (mostly running ones). */
  pickNode(rng: Rng): number;
}

/** PushClass is how a finished `git push` is classified for one ref. */
export interface PushClass {
  readonly outcome: Outcome | 'uptodate';
  readonly detail: string;
}

/**
 * classifyPush reads `git push --porcelain`: a status line for the ref says ok (` `, `+`, `-`,
 * `*`), up to date (`=`) or rejected (`!`, by the client's lease check or by the server: never
 * applied). Without one, a refusal of the first request (GET info/refs: HTTP 503, 401/403,
 * connection refused) is `failed`; anything else (timeout, connection reset, closed without a
 * report, 502, the remote end hung up) is `unknown`. So is any error answer to the POST that
 * carries the pack ("RPC failed"): libcurl silently sends a request again when its reused
 * connection closed before any byte of the answer, so a 503 or a refused connection there may
 * be the answer to a second try whose first one was processed.
 */
export function classifyPush(r: GitCall, ref: string): PushClass {
  for (const line of r.stdout.split('\n')) {
    const parts = line.split('\t');
    if (parts.length < 3) continue;
    const [flag, spec, summary] = parts as [string, string, string];
    if (spec.slice(spec.lastIndexOf(':') + 1) !== ref) continue;
    if (flag === '!') return { outcome: 'failed', detail: summary };
    if (flag === '=') return { outcome: 'uptodate', detail: summary };
    if ([' ', '+', '-', '*'].includes(flag)) return { outcome: 'ok', detail: summary };
  }
  const last = lastLine(r.stderr);
  if (r.timedOut) return { outcome: 'unknown', detail: `timeout; ${last}` };
  if (/RPC failed/.test(r.stderr)) return { outcome: 'unknown', detail: last };
  // A 503 (no in-sync replica, busy) or 401/403 (no or bad token) is answered before a push is
  // processed: never applied.
  if (/HTTP 50[3]|returned error: 503|HTTP 40[13]|returned error: 40[13]|could not read Username|Authentication failed/.test(r.stderr))
    return { outcome: 'failed', detail: last };
  // Anything else that shows the request got through (a disconnect, a reset, a partial answer) is unknown.
  if (/disconnect|hung up|reset|Empty reply|Recv failure|early EOF|closed|no report|status/i.test(r.stderr))
    return { outcome: 'unknown', detail: last };
  const lines = r.stderr
    .trim()
    .split('\n')
    .filter((l) => l.trim() !== '');
  const only = (re: RegExp): boolean => lines.length > 0 && lines.every((l) => re.test(l) || /^(To |Done$|error: failed to push)/.test(l));
  if (only(/Failed to connect|Couldn't connect|Connection refused/i)) return { outcome: 'failed', detail: last };
  return { outcome: 'unknown', detail: last || `exit ${String(r.code)}` };
}

function lastLine(s: string): string {
  return s
    .trim()
    .split('\n')
    .filter((l) => l.trim() !== '' && !/^(To |Done$|error: failed to push)/.test(l))
    .slice(-2)
    .join(' | ')
    .slice(0, 300);
}

/** Weights are the relative frequencies of a client's operations. */
export interface Weights {
  ffMain: number;
  ffDev: number;
  ffBranch: number;
  create: number;
  remove: number;
  force: number;
  lsRemote: number;
  fetch: number;
  clone: number;
}

/** DEFAULT_WEIGHTS mix writes and reads about half and half. */
export const DEFAULT_WEIGHTS: Weights = {
  ffMain: 26,
  ffDev: 8,
  ffBranch: 6,
  create: 7,
  remove: 5,
  force: 6,
  lsRemote: 16,
  fetch: 18,
  clone: 4,
};

/** ClientOptions configure one client. */
export interface ClientOptions {
  readonly id: string;
  readonly rng: Rng;
  readonly dir: string;
  readonly repos: readonly string[];
  readonly view: ClusterView;
  readonly recorder: Recorder;
  readonly gitTimeoutMs: number;
  readonly weights?: Weights;
}

type Tracking = Map<string, string>;

/**
 * Client is one workload client: its own bare work repo per cluster repo, its knowledge of the
 * branches (remote-tracking refs from its last fetch and its own acknowledged pushes), and the
 * operations it runs.
 */
export class Client {
  private counter = 0;
  private branchCounter = 0;
  private readonly tracking = new Map<string, Tracking>();

  constructor(readonly opts: ClientOptions) {}

  private workDir(repo: string): string {
    return join(this.opts.dir, `${repo.replace('/', '_')}.git`);
  }

  private known(repo: string): Tracking {
    let t = this.tracking.get(repo);
    if (!t) this.tracking.set(repo, (t = new Map<string, string>()));
    return t;
  }

  /** init makes the work repos and fetches each once. */
  async init(): Promise<void> {
    await mkdir(this.opts.dir, { recursive: true });
    for (const repo of this.opts.repos) {
      const r = await runGit(['init', '-q', '--bare', this.workDir(repo)], { timeoutMs: 30_000 });
      if (r.code !== 0) throw new Error(`git init failed: ${r.stderr}`);
      await this.fetch(repo, this.opts.view.pickNode(this.opts.rng));
    }
  }

  /** step runs one randomly chosen operation. */
  async step(): Promise<void> {
    const { rng, repos, view } = this.opts;
    const repo = rng.pick(repos);
    const node = view.pickNode(rng);
    const kind = rng.weighted<keyof Weights>({ ...(this.opts.weights ?? DEFAULT_WEIGHTS) });
    switch (kind) {
      case 'ffMain':
        return this.ffPush(repo, 'main', node);
      case 'ffDev':
        return this.ffPush(repo, 'dev', node);
      case 'ffBranch': {
        const own = this.otherBranches(repo);
        return own.length > 0 ? this.ffPush(repo, rng.pick(own), node) : this.createBranch(repo, node);
      }
      case 'create':
        return this.createBranch(repo, node);
      case 'remove':
        return this.deleteBranch(repo, node);
      case 'force':
        return this.forcePush(repo, node);
      case 'lsRemote':
        return void (await this.lsRemote(repo, node));
      case 'fetch':
        return void (await this.fetch(repo, node));
      case 'clone':
        return void (await this.clone(repo, node));
    }
  }

  private otherBranches(repo: string): string[] {
    return [...this.known(repo).keys()].filter((b) => !(SHARED_BRANCHES as readonly string[]).includes(b)).sort();
  }

  private async git(repo: string, args: string[], input?: string): Promise<string> {
    const r = await runGit(args, { cwd: this.workDir(repo), input, timeoutMs: 30_000 });
    if (r.code !== 0) throw new Error(`git ${args.join(' ')}: ${r.stderr.trim()}`);
    return r.stdout.trim();
  }

  /** makeCommit writes a new commit on `parent` (or a root commit) that changes this client's file. */
  private async makeCommit(repo: string, parent: string | null): Promise<string> {
    const n = ++this.counter;
    const big = this.opts.rng.next() < 0.05;
    let content = `${this.opts.id} ${n}\n`;
    if (big) for (let i = 0; i < 2_000; i++) content += `${Math.floor(this.opts.rng.next() * 1e12).toString(36)}\n`;
    const blob = await this.git(repo, ['hash-object', '-w', '--stdin'], content);
    const file = `${this.opts.id}.txt`;
    const entries = parent ? (await this.git(repo, ['ls-tree', parent])).split('\n').filter((l) => l && !l.endsWith(`\t${file}`)) : [];
    entries.push(`100644 blob ${blob}\t${file}`);
    const tree = await this.git(repo, ['mktree'], `${entries.join('\n')}\n`);
    return this.git(repo, ['commit-tree', tree, ...(parent ? ['-p', parent] : []), '-m', `${this.opts.id} commit ${n}`]);
  }

  /**
   * push runs one compare-and-swap push and records it: `ref` from `oldOid` to `newOid` (ZERO:
   * delete) through node `node`. An "up to date" answer is recorded as a read of the ref.
   */
  async push(
    repo: string,
    node: number,
    ref: string,
    oldOid: string,
    newOid: string,
    force: boolean,
    ancestry: Record<string, string[]>,
  ): Promise<Outcome> {
    const { recorder, view } = this.opts;
    const lease = `--force-with-lease=${ref}:${oldOid === ZERO ? '' : oldOid}`;
    // Never a `+` refspec: it makes git ignore the lease. The lease alone allows a non-fast-forward.
    const spec = newOid === ZERO ? `:${ref}` : `${newOid}:${ref}`;
    const start = recorder.now();
    const r = await runGit(['push', '--porcelain', '--no-verify', lease, view.repoUrl(node, repo), spec], {
      cwd: this.workDir(repo),
      timeoutMs: this.opts.gitTimeoutMs,
    });
    const end = recorder.now();
    const c = classifyPush(r, ref);
    const base = {
      client: this.opts.id,
      repo,
      node: `node-${node}`,
      start,
      end,
      detail: c.outcome === 'ok' ? c.detail : `${c.detail} [stderr: ${r.stderr.trim().slice(-600)}]`,
    };
    if (c.outcome === 'uptodate') {
      recorder.addRead({ ...base, outcome: 'ok', via: 'push', values: { [ref]: newOid } });
      return 'ok';
    }
    recorder.addPush({ ...base, outcome: c.outcome, ref, oldOid, newOid, force, ancestry });
    if (c.outcome === 'ok') {
      const branch = ref.slice('refs/heads/'.length);
      if (newOid === ZERO) this.known(repo).delete(branch);
      else this.known(repo).set(branch, newOid);
    }
    return c.outcome;
  }

  /**
   * ffPush commits on the branch's known tip and pushes; when rejected or unknown it fetches,
   * and if its commit is not there, makes it again on the new tip ("rebase") and retries.
   */
  async ffPush(repo: string, branch: string, node: number, attempts = 3): Promise<void> {
    const ref = `refs/heads/${branch}`;
    for (let a = 0; a < attempts; a++) {
      const old = this.known(repo).get(branch) ?? ZERO;
      const commit = await this.makeCommit(repo, old === ZERO ? null : old);
      const outcome = await this.push(repo, a === 0 ? node : this.opts.view.pickNode(this.opts.rng), ref, old, commit, false, {
        [commit]: old === ZERO ? [] : [old],
      });
      if (outcome === 'ok') return;
      if (!(await this.fetch(repo, this.opts.view.pickNode(this.opts.rng)))) continue;
      const tip = this.known(repo).get(branch);
      if (outcome === 'unknown' && tip && (await this.contains(repo, tip, commit))) return;
    }
  }

  private async contains(repo: string, tip: string, commit: string): Promise<boolean> {
    const r = await runGit(['merge-base', '--is-ancestor', commit, tip], { cwd: this.workDir(repo), timeoutMs: 30_000 });
    return r.code === 0;
  }

  /** createBranch pushes a new branch: a new commit on main, or (sometimes) main's tip itself. */
  async createBranch(repo: string, node: number): Promise<void> {
    const branch = `${this.opts.id}-${++this.branchCounter}`;
    const base = this.known(repo).get('main') ?? null;
    let commit: string;
    let ancestry: Record<string, string[]> = {};
    if (base && this.opts.rng.next() < 0.25) {
      commit = base;
    } else {
      commit = await this.makeCommit(repo, base);
      ancestry = { [commit]: base ? [base] : [] };
    }
    const outcome = await this.push(repo, node, `refs/heads/${branch}`, ZERO, commit, false, ancestry);
    if (outcome !== 'ok') await this.fetch(repo, this.opts.view.pickNode(this.opts.rng));
  }

  /** deleteBranch deletes a non-shared branch it knows of (any client's). */
  async deleteBranch(repo: string, node: number): Promise<void> {
    const candidates = this.otherBranches(repo);
    if (candidates.length === 0) return this.createBranch(repo, node);
    const branch = this.opts.rng.pick(candidates);
    const old = this.known(repo).get(branch)!;
    const outcome = await this.push(repo, node, `refs/heads/${branch}`, old, ZERO, true, {});
    if (outcome !== 'ok') await this.fetch(repo, this.opts.view.pickNode(this.opts.rng));
  }

  /** forcePush rewrites the last commit of dev or of another non-shared branch (a non-fast-forward). */
  async forcePush(repo: string, node: number): Promise<void> {
    const candidates = ['dev', ...this.otherBranches(repo)].filter((b) => this.known(repo).has(b));
    if (candidates.length === 0) return void (await this.fetch(repo, node));
    const branch = this.opts.rng.pick(candidates);
    const old = this.known(repo).get(branch)!;
    const parentRun = await runGit(['rev-parse', '--verify', '-q', `${old}^`], { cwd: this.workDir(repo), timeoutMs: 30_000 });
    const parent = parentRun.code === 0 ? parentRun.stdout.trim() : null;
    const commit = await this.makeCommit(repo, parent);
    const outcome = await this.push(repo, node, `refs/heads/${branch}`, old, commit, true, { [commit]: parent ? [parent] : [] });
    if (outcome !== 'ok') await this.fetch(repo, this.opts.view.pickNode(this.opts.rng));
  }

  /**
   * probe runs one write of each kind through `node` on a quiet cluster (fast-forward, new
   * branch, force push, delete, new branch at an existing commit: a push without a pack) and
   * returns each outcome: after faults heal, all must be ok.
   */
  async probe(repo: string, node: number): Promise<Record<string, Outcome>> {
    const out: Record<string, Outcome> = {};
    if (!(await this.fetch(repo, node))) return { fetch: 'failed' };
    const main = this.known(repo).get('main') ?? ZERO;
    const ff = await this.makeCommit(repo, main === ZERO ? null : main);
    out.ff = await this.push(repo, node, 'refs/heads/main', main, ff, false, { [ff]: main === ZERO ? [] : [main] });
    const branch = `${this.opts.id}-probe-${++this.branchCounter}`;
    const created = await this.makeCommit(repo, ff);
    out.create = await this.push(repo, node, `refs/heads/${branch}`, ZERO, created, false, { [created]: [ff] });
    const rewritten = await this.makeCommit(repo, ff);
    out.force = await this.push(repo, node, `refs/heads/${branch}`, created, rewritten, true, { [rewritten]: [ff] });
    out.delete = await this.push(repo, node, `refs/heads/${branch}`, rewritten, ZERO, true, {});
    out.createAtExisting = await this.push(repo, node, `refs/heads/${branch}-same`, ZERO, ff, false, {});
    return out;
  }

  /** fetch updates the remote-tracking refs from a node and records what it saw; false if it failed. */
  async fetch(repo: string, node: number): Promise<boolean> {
    const { recorder, view } = this.opts;
    const start = recorder.now();
    const r = await runGit(
      ['fetch', '-q', '--prune', '--no-tags', '--no-write-fetch-head', view.repoUrl(node, repo), '+refs/heads/*:refs/remotes/origin/*'],
      { cwd: this.workDir(repo), timeoutMs: this.opts.gitTimeoutMs },
    );
    const end = recorder.now();
    const base = { client: this.opts.id, repo, node: `node-${node}`, start, end, via: 'fetch' as const };
    if (r.code !== 0) {
      recorder.addRead({ ...base, outcome: 'failed', values: {}, detail: lastLine(r.stderr) });
      return false;
    }
    const out = await this.git(repo, ['for-each-ref', '--format=%(objectname) %(refname)', 'refs/remotes/origin/']);
    const values: Record<string, string> = {};
    const t = this.known(repo);
    t.clear();
    for (const line of out.split('\n')) {
      const [oid, name] = line.split(' ') as [string, string | undefined];
      if (!name) continue;
      const branch = name.slice('refs/remotes/origin/'.length);
      values[`refs/heads/${branch}`] = oid;
      t.set(branch, oid);
    }
    recorder.addRead({ ...base, outcome: 'ok', values, complete: 'refs/heads/' });
    return true;
  }

  /** lsRemote lists a node's branches and records them. */
  async lsRemote(repo: string, node: number): Promise<boolean> {
    const { recorder, view } = this.opts;
    const start = recorder.now();
    const r = await runGit(['ls-remote', '--heads', view.repoUrl(node, repo)], { timeoutMs: this.opts.gitTimeoutMs });
    const end = recorder.now();
    const base = { client: this.opts.id, repo, node: `node-${node}`, start, end, via: 'ls-remote' as const };
    if (r.code !== 0) {
      recorder.addRead({ ...base, outcome: 'failed', values: {}, detail: lastLine(r.stderr) });
      return false;
    }
    recorder.addRead({ ...base, outcome: 'ok', values: parseRefLines(r.stdout, '\t'), complete: 'refs/heads/' });
    return true;
  }

  /** clone makes a bare clone from a node, records its branches and removes it. */
  async clone(repo: string, node: number): Promise<boolean> {
    const { recorder, view } = this.opts;
    const dir = await mkdtemp(join(this.opts.dir, 'clone-'));
    try {
      const start = recorder.now();
      const r = await runGit(['clone', '-q', '--bare', '--no-tags', view.repoUrl(node, repo), join(dir, 'c.git')], {
        timeoutMs: this.opts.gitTimeoutMs,
      });
      const end = recorder.now();
      const base = { client: this.opts.id, repo, node: `node-${node}`, start, end, via: 'clone' as const };
      if (r.code !== 0) {
        recorder.addRead({ ...base, outcome: 'failed', values: {}, detail: lastLine(r.stderr) });
        return false;
      }
      const refs = await runGit(['for-each-ref', '--format=%(objectname) %(refname)', 'refs/heads/'], {
        cwd: join(dir, 'c.git'),
        timeoutMs: 30_000,
      });
      if (refs.code !== 0) throw new Error(`for-each-ref in a fresh clone failed: ${refs.stderr}`);
      recorder.addRead({ ...base, outcome: 'ok', values: parseRefLines(refs.stdout, ' '), complete: 'refs/heads/' });
      return true;
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }
}

function parseRefLines(text: string, sep: string): Record<string, string> {
  const values: Record<string, string> = {};
  for (const line of text.split('\n')) {
    const i = line.indexOf(sep);
    if (i <= 0) continue;
    const name = line.slice(i + 1).trim();
    if (name.startsWith('refs/heads/')) values[name] = line.slice(0, i);
  }
  return values;
}
