/**
 * Tally collects the answers of a fan-out and lets a caller wait until enough arrived, all
 * arrived, or a deadline passed — without waiting for the slowest (DESIGN §5 step 4).
 */
export class Tally<T> {
  private readonly answers = new Map<string, T>();
  private waiters: Array<() => void> = [];

  constructor(private readonly expected: number) {}

  /** add records one participant's answer. */
  add(id: string, answer: T): void {
    this.answers.set(id, answer);
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  /** get returns an answer. */
  get(id: string): T | undefined {
    return this.answers.get(id);
  }

  /** count counts the answers matching `pred`. */
  count(pred: (a: T) => boolean): number {
    let n = 0;
    for (const a of this.answers.values()) if (pred(a)) n++;
    return n;
  }

  /** entries lists every answer so far. */
  entries(): Array<[string, T]> {
    return [...this.answers.entries()];
  }

  /** complete says whether every expected participant answered. */
  get complete(): boolean {
    return this.answers.size >= this.expected;
  }

  /** until resolves when `done()` holds, everyone answered, or `timeoutMs` passed. */
  async until(done: () => boolean, timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!done() && !this.complete) {
      const left = deadline - Date.now();
      if (left <= 0) return;
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }
}
