import { cpus, freemem, totalmem } from 'node:os';

/**
 * LoadSampler measures recent CPU utilisation (0-100) from the difference of two samples of the
 * kernel's CPU counters, not the since-boot average, and memory use in percent.
 */
export class LoadSampler {
  private prev = snapshot();
  private cpu = 0;
  private timer: NodeJS.Timeout | null = null;

  /** start samples every `intervalMs`. */
  start(intervalMs = 1_000): void {
    this.timer = setInterval(() => this.sample(), intervalMs);
    this.timer.unref();
  }

  /** stop ends sampling. */
  stop(): void {
    if (this.timer) clearInterval(this.timer);
  }

  private sample(): void {
    const cur = snapshot();
    const total = cur.total - this.prev.total;
    const idle = cur.idle - this.prev.idle;
    this.cpu = total > 0 ? Math.max(0, Math.min(100, 100 * (1 - idle / total))) : 0;
    this.prev = cur;
  }

  /** load returns the latest utilisation figures, rounded to two decimals. */
  load(): { cpu: number; memory: number } {
    const mem = (100 * (totalmem() - freemem())) / totalmem();
    return { cpu: round2(this.cpu), memory: round2(mem) };
  }
}

function snapshot(): { idle: number; total: number } {
  let idle = 0;
  let total = 0;
  for (const c of cpus()) {
    const t = c.times;
    idle += t.idle;
    total += t.user + t.nice + t.sys + t.idle + t.irq;
  }
  return { idle, total };
}

function round2(n: number): number {
  return Math.round(n * 100) / 100;
}
