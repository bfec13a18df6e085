/**
 * The operation history a chaos run records and the checker judges (pure data, no I/O).
 *
 * Every client operation is one `Op`: who did it, what it asked for, when it started and ended
 * (monotonic milliseconds of the recording process) and what the client learnt of its outcome:
 * `ok` (acknowledged), `failed` (a clear rejection: it never took effect) or `unknown` (timed out,
 * connection lost, closed without a report: it may or may not have taken effect, now or later).
 */

/** ZERO is git's null object id: a ref that does not exist. */
export const ZERO = '0'.repeat(40);

/** Outcome is what the client learnt of an operation. */
export type Outcome = 'ok' | 'failed' | 'unknown';

interface OpBase {
  /** id is unique within a history, in recording order. */
  readonly id: number;
  /** client is who ran the operation (a workload client or the fault injector). */
  readonly client: string;
  /** repo is the repository id, `owner/name`. */
  readonly repo: string;
  /** node is the node the client talked to (for diagnostics only). */
  readonly node?: string;
  readonly start: number;
  readonly end: number;
  readonly outcome: Outcome;
  /** detail is a short diagnostic (git's last stderr line, the classification reason). */
  readonly detail?: string;
}

/**
 * PushOp is one ref update: a compare-and-swap of `ref` from `oldOid` (ZERO: the ref must not
 * exist) to `newOid` (ZERO: delete). Every workload push carries an explicit lease
 * (`--force-with-lease=<ref>:<old>`), so `oldOid` is exactly what the server compared against.
 */
export interface PushOp extends OpBase {
  readonly kind: 'push';
  readonly ref: string;
  readonly oldOid: string;
  readonly newOid: string;
  /** force says the update may be a non-fast-forward (forced push or delete). */
  readonly force: boolean;
  /**
   * ancestry is the commit graph the client knew when it pushed: for each commit it introduced
   * (at least `newOid` and every commit not already on its remote-tracking refs), its parents.
   */
  readonly ancestry: Readonly<Record<string, readonly string[]>>;
}

/**
 * ReadOp is one observation of refs (ls-remote, clone, fetch, or a push git found already up to
 * date): `values` maps ref → oid. When
 * `complete` is a prefix (e.g. `refs/heads/`), every ref under it that is not in `values` was
 * observed absent; otherwise only the listed refs were observed.
 */
export interface ReadOp extends OpBase {
  readonly kind: 'read';
  readonly via: 'ls-remote' | 'clone' | 'fetch' | 'push';
  readonly values: Readonly<Record<string, string>>;
  readonly complete?: string;
  /**
   * mayBeStale, when set, says why the read may be stale by design: it went through a node that
   * could not reach the store, which serves the last generation it saw (DESIGN §6, I3 holds
   * while the store is reachable). Such a read is not held to linearizability; it must still
   * see only values some push wrote.
   */
  readonly mayBeStale?: string;
}

/** Op is one recorded operation. */
export type Op = PushOp | ReadOp;

/** ReplicaState is one replica's final state, collected after faults healed and repair finished. */
export interface ReplicaState {
  readonly node: string;
  /** inSync is the store's view: confirmed at the repo's generation. */
  readonly inSync: boolean;
  /** refs is `git for-each-ref` of the replica directory: ref → oid. */
  readonly refs: Readonly<Record<string, string>>;
  /** checksum is the replica's checksum computed from its refs on disk. */
  readonly checksum: string;
  /** fsckOk says `git fsck` found nothing wrong; fsckOutput holds what it said otherwise. */
  readonly fsckOk: boolean;
  readonly fsckOutput?: string;
  /** lockFiles lists lock-like leftovers in the replica: `*.lock`, `packed-refs.new`, pack `.keep` files. */
  readonly lockFiles: readonly string[];
  /** tempFiles lists temporaries a killed git leaves (`tmp_pack_*`, quarantine directories): a leak, not a lock. */
  readonly tempFiles?: readonly string[];
}

/** RepoFinalState is one repo's final state. */
export interface RepoFinalState {
  readonly repo: string;
  /** expectedChecksum is the checksum the store records for the repo's generation. */
  readonly expectedChecksum?: string;
  readonly generation?: number;
  readonly replicas: readonly ReplicaState[];
  /** heldLock is the repo write lock still held in the store after everything settled, if any. */
  readonly heldLock: { readonly holder: string; readonly token: number } | null;
  /** converged is false when the replicas did not all come in sync before the deadline. */
  readonly converged: boolean;
}

/** FinalState is the whole cluster's final state. */
export interface FinalState {
  readonly repos: readonly RepoFinalState[];
}

/** Reachable answers "is commit `ancestor` reachable from commit `descendant`" (a commit reaches itself). */
export type Reachable = (ancestor: string, descendant: string) => boolean;

/**
 * commitGraph builds a reachability function from the ancestry every push recorded, plus any
 * extra parent edges. Unknown commits reach only themselves.
 */
export function commitGraph(ops: readonly Op[], extra: Readonly<Record<string, readonly string[]>> = {}): Reachable {
  const parents = new Map<string, Set<string>>();
  const add = (edges: Readonly<Record<string, readonly string[]>>): void => {
    for (const [c, ps] of Object.entries(edges)) {
      let s = parents.get(c);
      if (!s) parents.set(c, (s = new Set()));
      for (const p of ps) s.add(p);
    }
  };
  for (const op of ops) if (op.kind === 'push') add(op.ancestry);
  add(extra);
  const memo = new Map<string, Set<string>>();
  const ancestorsOf = (c: string): Set<string> => {
    const hit = memo.get(c);
    if (hit) return hit;
    const seen = new Set<string>([c]);
    const stack = [c];
    while (stack.length > 0) {
      const x = stack.pop()!;
      for (const p of parents.get(x) ?? []) {
        if (!seen.has(p)) {
          seen.add(p);
          stack.push(p);
        }
      }
    }
    memo.set(c, seen);
    return seen;
  };
  return (ancestor, descendant) => ancestor === descendant || (descendant !== ZERO && ancestorsOf(descendant).has(ancestor));
}

/** readValue is what a read observed for `ref`, or undefined if the read says nothing about it. */
export function readValue(op: ReadOp, ref: string): string | undefined {
  const v = op.values[ref];
  if (v !== undefined) return v;
  if (op.complete !== undefined && ref.startsWith(op.complete)) return ZERO;
  return undefined;
}

/** refsOf lists the (repo, ref) pairs a history writes. */
export function refsOf(ops: readonly Op[]): Array<{ repo: string; ref: string }> {
  const seen = new Map<string, { repo: string; ref: string }>();
  for (const op of ops) if (op.kind === 'push') seen.set(`${op.repo}\0${op.ref}`, { repo: op.repo, ref: op.ref });
  return [...seen.values()].sort((a, b) => (a.repo === b.repo ? a.ref.localeCompare(b.ref) : a.repo.localeCompare(b.repo)));
}

/** countByOutcome tallies a history: push and read counts per outcome. */
export function countByOutcome(ops: readonly Op[]): Record<string, Record<Outcome, number>> {
  const out: Record<string, Record<Outcome, number>> = {};
  for (const op of ops) {
    const key = op.kind === 'read' ? `read:${op.via}` : pushKind(op);
    const c = (out[key] ??= { ok: 0, failed: 0, unknown: 0 });
    c[op.outcome]++;
  }
  return out;
}

function pushKind(op: PushOp): string {
  if (op.newOid === ZERO) return 'push:delete';
  if (op.oldOid === ZERO) return 'push:create';
  return op.force ? 'push:force' : 'push:ff';
}

const short = (oid: string): string => (oid === ZERO ? '∅' : oid.slice(0, 8));

/** formatOp renders one operation on one line, times relative to `t0`. */
export function formatOp(op: Op, t0 = 0): string {
  const when = `[${(op.start - t0).toFixed(0)}..${op.outcome === 'unknown' ? '?' : ''}${(op.end - t0).toFixed(0)}ms]`;
  const who = `#${op.id} ${op.client}${op.node ? `@${op.node}` : ''}`;
  if (op.kind === 'push') {
    const what = `push ${op.repo} ${op.ref} ${short(op.oldOid)}→${short(op.newOid)}${op.force ? ' (force)' : ''}`;
    return `${when} ${who} ${what} => ${op.outcome}${op.detail ? ` (${op.detail})` : ''}`;
  }
  const vals = Object.entries(op.values)
    .map(([r, v]) => `${r}=${short(v)}`)
    .join(' ');
  return `${when} ${who} read(${op.via}) ${op.repo} ${vals}${op.complete ? ` [all of ${op.complete}*]` : ''} => ${op.outcome}`;
}
