/** ProgressStream is where progress goes: stderr, or any writable (a test's buffer). */
export interface ProgressStream {
  write(chunk: string): unknown;
  readonly isTTY?: boolean;
  readonly columns?: number;
}

/** BAR_WIDTH is the bar's width in cells when the terminal's width is unknown or wide. */
const BAR_WIDTH = 30;

/**
 * renderBar draws `done` of `total` as a bar of `width` cells (`[#####-----]`), clamped to
 * 0..total; an unknown or zero total draws an empty bar.
 */
export function renderBar(done: number, total: number, width: number = BAR_WIDTH): string {
  const fraction = total > 0 ? Math.min(1, Math.max(0, done / total)) : 0;
  const full = Math.floor(fraction * width);
  return `[${'#'.repeat(full)}${'-'.repeat(width - full)}]`;
}

/**
 * Progress shows how far a long CLI operation is (repair, verify --all, rebalance). On a
 * terminal it redraws one line in place: `label [####------] 3 of 10 note`; elsewhere (a pipe,
 * a file, CI) it writes a plain line `label: 3 of 10 note` each time the text changes, so a log
 * reads as a history and never holds carriage returns or escape codes.
 */
export class Progress {
  private last = '';
  private drawn = false;

  constructor(
    private readonly stream: ProgressStream,
    private readonly label: string,
    private total: number,
  ) {}

  /** tty says whether the progress redraws a bar (the stream is a terminal). */
  get tty(): boolean {
    return this.stream.isTTY === true;
  }

  /** update shows `done` of the total (a new total when given), with an optional note after it. */
  update(done: number, note = '', total = this.total): void {
    this.total = total;
    const count = `${done} of ${total}`;
    if (!this.tty) {
      const line = `${this.label}: ${count}${note ? ` ${note}` : ''}`;
      if (line !== this.last) this.stream.write(`${line}\n`);
      this.last = line;
      return;
    }
    // A pty without a window size (script, some CI runners) says 0 columns: take 80.
    const columns = this.stream.columns || 80;
    const width = Math.max(10, Math.min(BAR_WIDTH, columns - this.label.length - count.length - 6));
    const text = `${this.label} ${renderBar(done, total, width)} ${count}${note ? ` ${note}` : ''}`;
    // \r back to the start, \x1b[K clears what a longer previous line left; cut to the width so it never wraps.
    this.stream.write(`\r${text.slice(0, Math.max(1, columns - 1))}\u001b[K`);
    this.drawn = true;
  }

  /**
   * print writes a result line to `out` (stdout, for scripts) without breaking the bar: on a
   * terminal the bar is cleared first and redrawn by the next update.
   */
  print(line: string, out: ProgressStream): void {
    if (this.tty && this.drawn) this.stream.write('\r\u001b[K');
    this.drawn = false;
    out.write(`${line}\n`);
  }

  /** end leaves the terminal on a fresh line after the bar; nothing to do on a plain stream. */
  end(): void {
    if (this.tty && this.drawn) this.stream.write('\n');
    this.drawn = false;
  }
}
