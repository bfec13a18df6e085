import { statfs } from 'node:fs/promises';

/**
 * DiskSpace watches the free space of the file system under the data dir (every few seconds,
 * and on demand) so a node whose disk fills refuses new writes with a clear reason, before git
 * or SQLite fail half-way. Reads, and the commits of transactions already prepared, go on.
 */
export class DiskSpace {
  private free: number | null = null;
  private timer: NodeJS.Timeout | null = null;

  /** minFreeBytes: below this many free bytes the node takes no new writes. */
  constructor(
    private readonly dir: string,
    readonly minFreeBytes: number,
    private readonly read: (dir: string) => Promise<number> = freeBytesOf,
  ) {}

  /** start takes a first reading and re-reads every `everyMs`. */
  async start(everyMs = 5_000): Promise<void> {
    await this.refresh();
    this.timer = setInterval(() => {
      void this.refresh();
    }, everyMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
  }

  /** refresh re-reads the free space now. */
  async refresh(): Promise<void> {
    this.free = await this.read(this.dir).catch(() => this.free);
  }

  /** freeBytes is the last reading (null before the first). */
  get freeBytes(): number | null {
    return this.free;
  }

  /** shortage says why the node takes no writes for want of space, or null. */
  shortage(): string | null {
    if (this.free === null || this.free >= this.minFreeBytes) return null;
    return `disk full: ${mib(this.free)} MiB free under the data dir, ${mib(this.minFreeBytes)} MiB required`;
  }
}

function mib(n: number): string {
  return (n / 1024 / 1024).toFixed(0);
}

/** freeBytesOf reads the bytes available to this user on the file system holding `dir`. */
export async function freeBytesOf(dir: string): Promise<number> {
  const s = await statfs(dir);
  return s.bavail * s.bsize;
}
