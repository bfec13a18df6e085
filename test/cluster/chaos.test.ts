import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { runChaos, type ChaosReport } from '../../chaos/run.js';
import { skipWithoutEtcd } from '../helpers/etcd.js';

/**
 * The short, seeded chaos runs of `npm test` (the long ones are `npm run chaos`): real node
 * processes, real git clients, every fault kind, and the history checker over the result. The
 * seeds are fixed; interleavings still depend on timing, so a failure prints the seed, the
 * violations with a minimal history, and the node logs. On an idle 2-core machine the file takes
 * about 2 minutes; the per-test timeout leaves room for a loaded one. After the faults heal, a
 * probe requires every kind of write (fast-forward, new branch, force push, delete) to succeed.
 */
function explain(r: ChaosReport): string {
  return `${r.text}\n${r.logs ? `\nnode logs (tail):\n${r.logs}` : ''}`;
}

/**
 * run is runChaos with what a slow or odd run needs to be understood: the injector's and the
 * heal's complaints go to stdout (a fault that failed carries the node's last output, such as a
 * restarted node that never became healthy), and with CHAOS_LOG_DIR set each test keeps its node
 * logs in its own subdirectory (the next test's nodes would overwrite them).
 */
async function run(name: string, opts: Parameters<typeof runChaos>[0]): Promise<ChaosReport> {
  const base = process.env.CHAOS_LOG_DIR;
  return runChaos({
    ...opts,
    ...(base ? { logDir: join(base, name.replace(/\W+/g, '-')) } : {}),
    log: (line) => {
      if (/failed|not healthy|not hit|timed out|membership after heal|heal: /.test(line)) process.stdout.write(`[chaos ${name}] ${line}\n`);
    },
  });
}

function summary(name: string, r: ChaosReport): void {
  const faults = new Map<string, number>();
  for (const e of r.faults) faults.set(e.kind, (faults.get(e.kind) ?? 0) + 1);
  process.stdout.write(
    `[chaos ${name}] ${r.text.split('\n').slice(0, 2).join(' | ')} | faults ${[...faults].map(([k, v]) => `${k}=${v}`).join(' ')}\n`,
  );
}

describe('chaos: seeded fault injection checked by the history checker', () => {
  it('3 nodes, R=3: kill -9, fail point crashes, SIGSTOP past the lease, partitions, slow links; Git LFS uploads beside', async () => {
    const r = await run('3 nodes', { seed: 42, nodes: 3, clients: 3, durationMs: 25_000, lfs: true });
    summary('3 nodes', r);
    expect(r.totals.ok, explain(r)).toBeGreaterThan(10);
    // Every acknowledged LFS object was checked on every replica and through every node (violations below).
    expect(r.text, explain(r)).toMatch(/lfs: \d+ uploads \(ok [1-9]/);
    expect(r.result.violations, explain(r)).toEqual([]);
  }, 240_000);

  it('6 nodes, R=3 (W=2): repos on different replica sets, proxied reads and pushes', async () => {
    const r = await run('6 nodes', {
      seed: 7,
      nodes: 6,
      replicationFactor: 3,
      clients: 3,
      repos: 3,
      durationMs: 12_000,
      faults: ['kill', 'failpoint', 'pause', 'partition'],
    });
    summary('6 nodes', r);
    expect(r.totals.ok, explain(r)).toBeGreaterThan(5);
    expect(r.result.violations, explain(r)).toEqual([]);
  }, 240_000);
});

describe.skipIf(skipWithoutEtcd())('chaos on etcd: the store partitioned from a majority, and restarted', () => {
  it('3 nodes, R=3: store partitions, store kill/stop and restart, kill -9 of nodes', async () => {
    const r = await run('etcd', {
      seed: 11,
      nodes: 3,
      clients: 3,
      durationMs: 25_000,
      store: 'etcd',
      faults: ['store-partition', 'store-restart', 'kill'],
    });
    summary('etcd', r);
    const kinds = new Set(r.faults.map((f) => f.kind));
    expect(kinds.has('store-partition') && kinds.has('store-restart'), explain(r)).toBe(true);
    expect(r.totals.ok, explain(r)).toBeGreaterThan(10);
    expect(r.result.violations, explain(r)).toEqual([]);
  }, 240_000);
});
