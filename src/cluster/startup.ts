/** STEP_WARN_MS is how long a start-up step runs before the node says, naming it, that it still waits for it. */
export const STEP_WARN_MS = 10_000;

interface StepLogger {
  warn(obj: object, msg: string): void;
}

/**
 * StartupSteps times a node's start-up steps. A step still running after `warnAfterMs` is
 * named in a warning, and again every `warnAfterMs`, so that a node that does not come up says
 * what it waits for. `timings` go into the "node started" line.
 */
export class StartupSteps {
  private readonly ms: Record<string, number> = {};

  constructor(
    private readonly logger: StepLogger,
    private readonly warnAfterMs = STEP_WARN_MS,
  ) {}

  /** run runs one step (its function may be synchronous) and records how long it took. */
  async run<T>(name: string, step: () => T | Promise<T>): Promise<T> {
    const started = Date.now();
    const timer = setInterval(
      () => this.logger.warn({ step: name, ms: Date.now() - started }, 'start-up step still running'),
      this.warnAfterMs,
    );
    timer.unref();
    try {
      return await step();
    } finally {
      clearInterval(timer);
      this.ms[name] = Date.now() - started;
      if (this.ms[name] >= this.warnAfterMs) this.logger.warn({ step: name, ms: this.ms[name] }, 'start-up step ended');
    }
  }

  /** timings are the steps' durations in ms, by name, in the order they ran. */
  get timings(): Readonly<Record<string, number>> {
    return { ...this.ms };
  }
}
