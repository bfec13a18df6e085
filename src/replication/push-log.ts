/** REFS_LOGGED caps the ref names one log line carries; `refCount` says how many there were. */
export const REFS_LOGGED = 10;
/** REASONS_LOGGED caps the distinct refusal reasons one log line carries. */
const REASONS_LOGGED = 5;

/** RefsField is the part of a push's log line that names its refs. */
export interface RefsField {
  readonly refs: string[];
  readonly refCount: number;
}

/** refsField names the first REFS_LOGGED refs of a push and counts them all (a mirror push may carry thousands). */
export function refsField(refs: readonly string[]): RefsField {
  return { refs: refs.slice(0, REFS_LOGGED), refCount: refs.length };
}

/** PushPhases are the milliseconds of a transaction's phases, as the coordinator measures them. */
export interface PushPhases {
  readonly ms: number;
  readonly prepareMs: number;
  readonly decideMs?: number;
  readonly commitMs?: number;
}

/** phasesBetween turns the coordinator's clock readings into phase lengths; a phase not reached is left out. */
export function phasesBetween(marks: { started: number; prepared: number; decided?: number; done: number }): PushPhases {
  return {
    ms: marks.done - marks.started,
    prepareMs: marks.prepared - marks.started,
    ...(marks.decided !== undefined ? { decideMs: marks.decided - marks.prepared, commitMs: marks.done - marks.decided } : {}),
  };
}

/**
 * refusedField describes the refs of a push refused before any transaction (git's own checks:
 * `fetch first`, a bad name, the lock busy): their names and their distinct reasons. Null when
 * none of `refs` was refused.
 */
export function refusedField(
  refs: ReadonlyArray<{ ref: string; result: { ok: true } | { ok: false; reason: string } | undefined }>,
): (RefsField & { reasons: string[] }) | null {
  const refused = refs.filter((r): r is { ref: string; result: { ok: false; reason: string } } => r.result?.ok === false);
  if (refused.length === 0) return null;
  const reasons = [...new Set(refused.map((r) => r.result.reason))].slice(0, REASONS_LOGGED);
  return { ...refsField(refused.map((r) => r.ref)), reasons };
}
