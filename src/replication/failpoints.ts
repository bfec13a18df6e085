/** FailAction is what an armed fail point does. */
export type FailAction = { kind: 'crash' } | { kind: 'delay'; ms: number } | { kind: 'error' };

/** FAILPOINT_NAMES are the steps of a transaction where tests can inject a crash, delay or error. */
export const FAILPOINT_NAMES = [
  'coordinator.beforePrepare',
  'coordinator.afterPrepare',
  'coordinator.afterDecision',
  'coordinator.beforeCommit',
  'coordinator.afterCommit',
  'coordinator.afterConfirm',
  'participant.afterStage',
  'participant.afterCopyCheck',
  'participant.beforePrepare',
  'participant.afterPrepare',
  'participant.beforeCommit',
  'participant.beforeRefSync',
  'participant.afterCommit',
] as const;

/**
 * REPAIR_FAILPOINT_NAMES are steps of a repair, apart from FAILPOINT_NAMES (which a push drives
 * through, one after the other): `repair.beforeSwap` runs between a whole copy of a replica
 * staged and its swap into place, so a delay there stands for a slow copy; `repair.lockedRound`
 * runs once a fetch repair that pushes outran holds the repo's write lock, before its last round.
 */
export const REPAIR_FAILPOINT_NAMES = ['repair.beforeSwap', 'repair.lockedRound'] as const;

/** FailpointName is one named step. */
export type FailpointName = (typeof FAILPOINT_NAMES)[number] | (typeof REPAIR_FAILPOINT_NAMES)[number];

const KNOWN: readonly string[] = [...FAILPOINT_NAMES, ...REPAIR_FAILPOINT_NAMES];

/**
 * Failpoints are switched on only by the environment variable GIT_REPLICATION_FAILPOINTS, e.g.
 * `participant.afterPrepare=crash,coordinator.afterDecision=delay(2000)`; with it unset every
 * hit() is a no-op.
 */
export class Failpoints {
  private readonly armed = new Map<string, FailAction>();

  constructor(spec: string | undefined) {
    for (const item of (spec ?? '')
      .split(',')
      .map((s) => s.trim())
      .filter(Boolean)) {
      const [name, action] = item.split('=', 2) as [string, string | undefined];
      if (!KNOWN.includes(name)) throw new Error(`unknown fail point '${name}'`);
      const delay = /^delay\((\d+)\)$/.exec(action ?? '');
      if (action === 'crash') this.armed.set(name, { kind: 'crash' });
      else if (action === 'error') this.armed.set(name, { kind: 'error' });
      else if (delay) this.armed.set(name, { kind: 'delay', ms: Number(delay[1]) });
      else throw new Error(`unknown fail point action '${String(action)}' for '${name}'`);
    }
  }

  /** hit runs the action armed at `name`, if any. */
  async hit(name: FailpointName): Promise<void> {
    const action = this.armed.get(name);
    if (!action) return;
    if (action.kind === 'crash') {
      process.stderr.write(`fail point ${name}: crash\n`);
      process.kill(process.pid, 'SIGKILL');
      await new Promise(() => undefined);
    }
    if (action.kind === 'delay') await new Promise((r) => setTimeout(r, action.ms));
    if (action.kind === 'error') throw new Error(`fail point ${name}: injected error`);
  }
}
