/**
 * The history checker (pure: no I/O). Given the operations a chaos run recorded and the cluster's
 * final state, it reports every violation of DESIGN §3's invariants it can see:
 *
 * 1. durability (I1): every acknowledged push is present at the end: its commit is reachable
 *    from the ref's final value, unless a push that may have taken effect after it (ok or
 *    unknown, not finished before it started) legitimately dropped it: a compare-and-swap from a
 *    value that contains the commit to one that does not (a force push or a delete);
 * 2. linearizability (I2, I3): per ref, the pushes (ok and unknown) and reads, plus the final
 *    value as a last read, form a linearizable history of a compare-and-swap register:
 *    a Wing–Gong search with memoisation. An ok op takes effect between its start and end, an
 *    unknown push at any time after its start or never, a failed one never; a read returns the
 *    register's value at some point of its interval;
 * 3. convergence and integrity (I4, I5): every replica in sync, equal checksums (equal to the
 *    store's), identical refs, fsck clean;
 * 4. crash safety (I5): no lock file left in any replica (`*.lock`, `packed-refs.new`, pack
 *    `.keep`), no repo write lock still held. Leaked temporaries (`tmp_pack_*`) are warnings.
 *
 * A failing ref check comes with a minimal sub-history: the failing ref's ops, then greedily
 * fewer while the check still fails.
 */
import { commitGraph, formatOp, readValue, ZERO, type FinalState, type Op, type PushOp, type Reachable, type ReadOp } from './history.js';

/** ViolationKind names what went wrong. */
export type ViolationKind =
  | 'lost-write'
  | 'not-linearizable'
  | 'inconclusive'
  | 'not-converged'
  | 'divergent-replicas'
  | 'checksum-mismatch'
  | 'fsck'
  | 'lock-file'
  | 'held-lock'
  /** unavailable: a write refused on the healed, quiet cluster (reported by the runner's probe). */
  | 'unavailable'
  /** phantom-read: a read allowed to be stale saw a value no push ever wrote. */
  | 'phantom-read';

/** Violation is one failed check, with the smallest history that still shows it. */
export interface Violation {
  readonly kind: ViolationKind;
  readonly repo: string;
  readonly ref?: string;
  readonly message: string;
  /** minimal is the shrunk sub-history (ref checks only). */
  readonly minimal?: readonly Op[];
}

/** CheckOptions tune the checker. */
export interface CheckOptions {
  /** reachable answers commit reachability; default: the graph the pushes' ancestry records. */
  readonly reachable?: Reachable;
  /** initial is each ref's value before the history (`repo\0ref` → oid); default ZERO (absent). */
  readonly initial?: Readonly<Record<string, string>>;
  /** maxStates bounds one linearizability search (default 2,000,000); past it the ref is 'inconclusive'. */
  readonly maxStates?: number;
  /** shrink turns off the minimal-history search when false (default true). */
  readonly shrink?: boolean;
}

/** CheckResult is the checker's verdict. */
export interface CheckResult {
  readonly ok: boolean;
  readonly violations: readonly Violation[];
  /** refsChecked counts (repo, ref) pairs the linearizability search covered. */
  readonly refsChecked: number;
  /** states counts the search states explored over all refs. */
  readonly states: number;
  /** warnings are findings that break no invariant (leaked temporary files). */
  readonly warnings: readonly string[];
}

/** check runs every check over a history and the final state. */
export function check(history: readonly Op[], final: FinalState, opts: CheckOptions = {}): CheckResult {
  const reachable = opts.reachable ?? commitGraph(history);
  const violations: Violation[] = [];
  let states = 0;
  let refsChecked = 0;

  for (const repo of final.repos) violations.push(...stateViolations(repo));

  const finalRefs = new Map<string, Readonly<Record<string, string>>>();
  for (const repo of final.repos) {
    const source = repo.replicas.find((r) => r.inSync) ?? (repo.converged ? repo.replicas[0] : undefined);
    if (source) finalRefs.set(repo.repo, source.refs);
  }

  const repos = new Set(history.map((o) => o.repo));
  for (const repoId of [...repos].sort()) {
    const refs = finalRefs.get(repoId);
    if (!refs) {
      if (!final.repos.some((r) => r.repo === repoId)) {
        violations.push({
          kind: 'not-converged',
          repo: repoId,
          message: `no final state collected for ${repoId}: history cannot be checked`,
        });
      }
      continue;
    }
    const ops = history.filter((o) => o.repo === repoId);
    const refNames = new Set<string>();
    for (const o of ops) if (o.kind === 'push') refNames.add(o.ref);
    for (const ref of [...refNames].sort()) {
      refsChecked++;
      const finalValue = refs[ref] ?? ZERO;
      const initial = opts.initial?.[`${repoId}\0${ref}`] ?? ZERO;
      const projected = projectRef(ops, ref);
      // Reads allowed to be stale (the store was unreachable from their node) only have to see
      // a value this ref really held: the initial one, or one a push (ok or unknown) wrote.
      const refOps = projected.filter((o) => o.kind !== 'read' || !o.mayBeStale);
      const written = new Set([
        initial,
        ZERO,
        ...projected.flatMap((o) => (o.kind === 'push' && o.outcome !== 'failed' ? [o.newOid] : [])),
      ]);
      for (const o of projected) {
        if (o.kind !== 'read' || !o.mayBeStale || o.outcome !== 'ok') continue;
        const v = readValue(o, ref);
        if (v !== undefined && !written.has(v)) {
          // Where the value came from, if any push carried it: a push told it failed (to this ref),
          // or one to another ref of the repo. That tells a rejected push that was applied from a
          // value that was never pushed at all.
          const carriers = ops.filter((p): p is PushOp => p.kind === 'push' && p.newOid === v);
          violations.push({
            kind: 'phantom-read',
            repo: repoId,
            ref,
            message:
              `${repoId} ${ref}: read #${o.id} (${o.mayBeStale}) saw ${short(v)}, a value no push that may have succeeded wrote` +
              (carriers.length > 0
                ? `; pushes that carried it: ${carriers.map((p) => formatOp(p)).join('; ')}`
                : '; no push of the history carried it'),
            minimal: [...carriers, o],
          });
        }
      }
      const lin = linearizable(refOps, ref, finalValue, initial, opts.maxStates);
      states += lin.states;
      const lost = lostWrites(refOps, ref, finalValue, reachable);
      // Shrink with a free initial value when the failure does not depend on it, so that
      // dropping the ops before the interesting ones keeps the failure meaningful.
      const failsFrom =
        (init: string | null) =>
        (sub: readonly Op[]): boolean => {
          const r = linearizable(sub, ref, finalValue, init, opts.maxStates);
          return !r.ok && !r.inconclusive;
        };
      const failLin = failsFrom(null)(refOps) ? failsFrom(null) : failsFrom(initial);
      if (lin.inconclusive) {
        violations.push({
          kind: 'inconclusive',
          repo: repoId,
          ref,
          message: `linearizability search of ${repoId} ${ref} gave up after ${lin.states} states (${refOps.length} ops)`,
        });
      } else if (!lin.ok) {
        const minimal = opts.shrink === false ? refOps : shrink(refOps, failLin);
        violations.push({
          kind: 'not-linearizable',
          repo: repoId,
          ref,
          message: `${repoId} ${ref}: no linearization as a compare-and-swap register ends at the final value ${short(finalValue)}; ${lin.why}`,
          minimal,
        });
      }
      for (const p of lost) {
        const failLost = (sub: readonly Op[]): boolean => sub.includes(p) && lostWrites(sub, ref, finalValue, reachable).includes(p);
        const minimal = opts.shrink === false ? refOps : shrink(refOps, failLost);
        violations.push({
          kind: 'lost-write',
          repo: repoId,
          ref,
          message: `${repoId} ${ref}: acknowledged push #${p.id} (${short(p.oldOid)}→${short(p.newOid)} by ${p.client}) is not reachable from the final value ${short(finalValue)}, and no push that could follow it replaced it`,
          minimal,
        });
      }
    }
  }
  const warnings: string[] = [];
  for (const repo of final.repos) {
    for (const r of repo.replicas)
      if ((r.tempFiles ?? []).length > 0)
        warnings.push(`${repo.repo} on ${r.node}: leaked temporary files: ${(r.tempFiles ?? []).join(', ')}`);
  }
  return { ok: violations.length === 0, violations, refsChecked, states, warnings };
}

/** stateViolations checks one repo's final state: convergence, equal replicas, fsck, locks. */
function stateViolations(repo: FinalState['repos'][number]): Violation[] {
  const out: Violation[] = [];
  const id = repo.repo;
  if (!repo.converged || repo.replicas.some((r) => !r.inSync)) {
    const lagging = repo.replicas.filter((r) => !r.inSync).map((r) => r.node);
    out.push({
      kind: 'not-converged',
      repo: id,
      message: `${id}: replicas not in sync after faults healed: ${lagging.join(', ') || '(repair did not finish)'}`,
    });
  }
  const base = repo.replicas[0];
  if (base) {
    const checksums = new Set(repo.replicas.map((r) => r.checksum));
    if (checksums.size > 1) {
      out.push({
        kind: 'divergent-replicas',
        repo: id,
        message: `${id}: replica checksums differ: ${repo.replicas.map((r) => `${r.node}=${r.checksum.slice(0, 12)}`).join(' ')}`,
      });
    }
    for (const r of repo.replicas.slice(1)) {
      const diff = refDiff(base.refs, r.refs);
      if (diff.length > 0)
        out.push({
          kind: 'divergent-replicas',
          repo: id,
          message: `${id}: ${base.node} and ${r.node} hold different refs: ${diff.slice(0, 10).join('; ')}`,
        });
    }
    if (repo.expectedChecksum !== undefined) {
      const wrong = repo.replicas.filter((r) => r.checksum !== repo.expectedChecksum);
      if (wrong.length > 0)
        out.push({
          kind: 'checksum-mismatch',
          repo: id,
          message: `${id}: store expects checksum ${repo.expectedChecksum.slice(0, 12)} (generation ${repo.generation ?? '?'}), ${wrong.map((r) => `${r.node} has ${r.checksum.slice(0, 12)}`).join(', ')}`,
        });
    }
  }
  for (const r of repo.replicas) {
    if (!r.fsckOk)
      out.push({
        kind: 'fsck',
        repo: id,
        message: `${id} on ${r.node}: git fsck failed: ${(r.fsckOutput ?? '').trim().split('\n').slice(0, 5).join(' | ')}`,
      });
    if (r.lockFiles.length > 0)
      out.push({ kind: 'lock-file', repo: id, message: `${id} on ${r.node}: leftover files: ${r.lockFiles.join(', ')}` });
  }
  if (repo.heldLock)
    out.push({
      kind: 'held-lock',
      repo: id,
      message: `${id}: write lock still held by ${repo.heldLock.holder} (token ${repo.heldLock.token}) after everything settled`,
    });
  return out;
}

function refDiff(a: Readonly<Record<string, string>>, b: Readonly<Record<string, string>>): string[] {
  const out: string[] = [];
  for (const k of new Set([...Object.keys(a), ...Object.keys(b)])) {
    if (a[k] !== b[k]) out.push(`${k}: ${short(a[k] ?? ZERO)} vs ${short(b[k] ?? ZERO)}`);
  }
  return out.sort();
}

/** projectRef keeps the ops that touch `ref`: its pushes and the reads that say something about it. */
function projectRef(ops: readonly Op[], ref: string): Op[] {
  return ops.filter((o) => (o.kind === 'push' ? o.ref === ref : readValue(o, ref) !== undefined));
}

/**
 * lostWrites lists the acknowledged pushes of `ref` whose commit the final value does not
 * contain, with no push that could have followed them and legitimately dropped them.
 */
export function lostWrites(ops: readonly Op[], ref: string, finalValue: string, reachable: Reachable): PushOp[] {
  const pushes = ops.filter((o): o is PushOp => o.kind === 'push' && o.ref === ref);
  const lost: PushOp[] = [];
  for (const p of pushes) {
    if (p.outcome !== 'ok' || p.newOid === ZERO) continue;
    if (finalValue !== ZERO && reachable(p.newOid, finalValue)) continue;
    // The register can only stop containing p's commit through a transition from a value that
    // contains it to one that does not: a force push or a delete whose old value holds it.
    const replaced = pushes.some(
      (q) =>
        q !== p &&
        q.outcome !== 'failed' &&
        !(q.outcome === 'ok' && q.end < p.start) &&
        q.oldOid !== ZERO &&
        reachable(p.newOid, q.oldOid) &&
        (q.newOid === ZERO || !reachable(p.newOid, q.newOid)),
    );
    if (!replaced) lost.push(p);
  }
  return lost;
}

interface LinOp {
  readonly op: Op | null;
  readonly start: number;
  readonly end: number;
  /** cas: [old, new]; read: the value seen. */
  readonly cas?: readonly [string, string];
  readonly read?: string;
}

/** LinResult is one ref's linearizability verdict. */
export interface LinResult {
  readonly ok: boolean;
  readonly inconclusive: boolean;
  readonly states: number;
  readonly why: string;
}

/**
 * linearizable searches for a linearization of one ref's ops as a compare-and-swap register
 * (Wing & Gong, with Lowe's memoisation of (linearized set, value) states). Must-ops (ok pushes,
 * ok reads and the final value, which comes last) must all be placed; unknown pushes may be
 * placed at any point after their start where their compare succeeds, or never. An `initial`
 * of null means "any value": the first op placed decides it (used to shrink histories).
 */
export function linearizable(
  ops: readonly Op[],
  ref: string,
  finalValue: string,
  initial: string | null = ZERO,
  maxStates = 2_000_000,
): LinResult {
  const must: LinOp[] = [];
  const maybe: LinOp[] = [];
  let lastEnd = 0;
  for (const o of ops) {
    if (o.outcome === 'failed') continue;
    if (o.kind === 'push') {
      if (o.ref !== ref) continue;
      const l: LinOp = { op: o, start: o.start, end: o.outcome === 'ok' ? o.end : Number.POSITIVE_INFINITY, cas: [o.oldOid, o.newOid] };
      (o.outcome === 'ok' ? must : maybe).push(l);
      if (o.outcome === 'ok') lastEnd = Math.max(lastEnd, o.end);
      lastEnd = Math.max(lastEnd, o.start);
    } else {
      if (o.outcome !== 'ok') continue;
      const v = readValue(o, ref);
      if (v === undefined) continue;
      must.push({ op: o, start: o.start, end: o.end, read: v });
      lastEnd = Math.max(lastEnd, o.end);
    }
  }
  must.push({ op: null, start: lastEnd + 1, end: Number.POSITIVE_INFINITY, read: finalValue });
  must.sort((a, b) => a.start - b.start || a.end - b.end);
  maybe.sort((a, b) => a.start - b.start);
  const n = must.length;
  const sufMinEnd = new Array<number>(n + 1).fill(Number.POSITIVE_INFINITY);
  for (let i = n - 1; i >= 0; i--) sufMinEnd[i] = Math.min(must[i]!.end, sufMinEnd[i + 1]!);

  interface State {
    p: number;
    extra: number[];
    used: number[];
    value: string;
  }
  const ANY = '*';
  const matches = (want: string, have: string): boolean => have === ANY || want === have;
  const keyOf = (s: State): string => `${s.p}|${s.extra.join(',')}|${s.used.join(',')}|${s.value}`;
  const visited = new Set<string>();
  let states = 0;
  let best: { depth: number; state: State } = { depth: -1, state: { p: 0, extra: [], used: [], value: initial ?? ANY } };

  /** successors lists the states one linearized op away. */
  const successors = (s: State): State[] => {
    const extraSet = new Set(s.extra);
    const hi = s.extra.length > 0 ? s.extra[s.extra.length - 1]! + 1 : s.p;
    let minEnd = sufMinEnd[hi]!;
    for (let j = s.p; j < hi; j++) if (!extraSet.has(j)) minEnd = Math.min(minEnd, must[j]!.end);
    const out: State[] = [];
    for (let j = s.p; j < n; j++) {
      const m = must[j]!;
      if (m.start > minEnd) break;
      if (extraSet.has(j)) continue;
      let value: string | null = null;
      if (m.read !== undefined) value = matches(m.read, s.value) ? m.read : null;
      else if (m.cas) value = matches(m.cas[0], s.value) ? m.cas[1] : null;
      if (value === null) continue;
      out.push(advance(s, j, value));
    }
    const usedSet = new Set(s.used);
    for (let k = 0; k < maybe.length; k++) {
      const u = maybe[k]!;
      if (u.start > minEnd) break;
      if (usedSet.has(k) || !matches(u.cas![0], s.value)) continue;
      out.push({ p: s.p, extra: s.extra, used: [...s.used, k].sort((a, b) => a - b), value: u.cas![1] });
    }
    return out;
  };
  const advance = (s: State, j: number, value: string): State => {
    const extra = [...s.extra, j].sort((a, b) => a - b);
    let p = s.p;
    while (extra.length > 0 && extra[0] === p) {
      extra.shift();
      p++;
    }
    return { p, extra, used: s.used, value };
  };

  const start: State = { p: 0, extra: [], used: [], value: initial ?? ANY };
  const stack: Array<{ state: State; next: State[] | null; i: number }> = [{ state: start, next: null, i: 0 }];
  visited.add(keyOf(start));
  while (stack.length > 0) {
    const top = stack[stack.length - 1]!;
    if (top.state.p === n) return { ok: true, inconclusive: false, states, why: '' };
    if (top.next === null) {
      top.next = successors(top.state);
      const depth = top.state.p + top.state.extra.length;
      if (depth > best.depth) best = { depth, state: top.state };
    }
    if (top.i >= top.next.length) {
      stack.pop();
      continue;
    }
    const s = top.next[top.i++]!;
    const k = keyOf(s);
    if (visited.has(k)) continue;
    visited.add(k);
    if (++states > maxStates) return { ok: false, inconclusive: true, states, why: 'state budget exhausted' };
    stack.push({ state: s, next: null, i: 0 });
  }
  // Explain where the deepest attempt got stuck: the first must-op it could not place.
  const b = best.state;
  const extraSet = new Set(b.extra);
  let stuck: LinOp | undefined;
  for (let j = b.p; j < n; j++)
    if (!extraSet.has(j)) {
      stuck = must[j];
      break;
    }
  const what = stuck?.op ? formatOp(stuck.op) : `the final value ${short(finalValue)}`;
  return {
    ok: false,
    inconclusive: false,
    states,
    why: `the furthest attempt placed ${best.depth} of ${n} required ops with the register at ${short(b.value)}, then could not place ${what}`,
  };
}

/**
 * shrink returns a small sub-history that still fails: chunks, then single ops, are dropped
 * greedily while `fails` stays true (ddmin-like, bounded).
 */
export function shrink(ops: readonly Op[], fails: (ops: readonly Op[]) => boolean): Op[] {
  let cur = [...ops];
  if (!fails(cur)) return cur;
  let chunk = Math.max(1, Math.floor(cur.length / 2));
  let budget = 5_000;
  for (;;) {
    let changed = false;
    for (let i = 0; i < cur.length && budget > 0;) {
      const candidate = cur.slice(0, i).concat(cur.slice(i + chunk));
      budget--;
      if (candidate.length < cur.length && fails(candidate)) {
        cur = candidate;
        changed = true;
      } else {
        i += chunk;
      }
    }
    if (budget <= 0) break;
    if (chunk === 1 && !changed) break;
    if (!changed) chunk = Math.max(1, Math.floor(chunk / 2));
  }
  return cur;
}

/** formatResult renders a verdict for people: PASS, or each violation with its minimal history. */
export function formatResult(r: CheckResult): string {
  const notes = r.warnings.map((w) => `warning: ${w}`);
  if (r.ok) return [`PASS (${r.refsChecked} refs linearizable, ${r.states} search states)`, ...notes].join('\n');
  const lines = [`FAIL: ${r.violations.length} violation(s)`, ...notes];
  for (const v of r.violations) {
    lines.push(`- [${v.kind}] ${v.message}`);
    if (v.minimal && v.minimal.length > 0) {
      const t0 = Math.min(...v.minimal.map((o) => o.start));
      lines.push(`  minimal history (${v.minimal.length} ops, ms from ${t0.toFixed(0)}):`);
      for (const o of v.minimal) lines.push(`    ${formatOp(v.ref && o.kind === 'read' ? onlyRef(o, v.ref) : o, t0)}`);
    }
  }
  return lines.join('\n');
}

function onlyRef(o: ReadOp, ref: string): ReadOp {
  return { ...o, values: { [ref]: readValue(o, ref) ?? '?' }, complete: undefined };
}

function short(oid: string): string {
  return oid === ZERO ? '∅' : oid.slice(0, 8);
}
