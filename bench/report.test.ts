import { describe, expect, it } from 'vitest';
import { targets, type WorkloadResult } from './report.js';
import type { ServerId } from './servers.js';
import { FULL, type WorkloadId } from './workloads.js';

/** result is a workload whose servers have the given medians (nothing else of it is read by targets). */
function result(id: WorkloadId, medians: Partial<Record<ServerId, Record<string, number>>>): WorkloadResult {
  const servers = Object.fromEntries(Object.entries(medians).map(([s, median]) => [s, { rounds: [], median, errors: [], setup: {} }]));
  return { id, number: 0, title: id, description: '', primary: '', metrics: [], durationS: 0, servers, ratios: {} };
}

const byName = (ts: ReturnType<typeof targets>, start: string): ReturnType<typeof targets>[number] => {
  const t = ts.find((x) => x.name.startsWith(start));
  if (!t) throw new Error(`no target '${start}' in ${ts.map((x) => x.name).join(', ')}`);
  return t;
};

describe("the benchmark's targets against node-git-server (issue #15)", () => {
  const params = { ...FULL, rounds: 1 };

  it('divides by node-git-server in the same run, and says which are met', () => {
    const ts = targets(
      [
        result('push-latency', {
          cluster3: { p50_ms: 60, server_cpu_ms: 50, mean_ms: 60 },
          single: { p50_ms: 45, server_cpu_ms: 25, mean_ms: 45 },
          'node-git-server': { p50_ms: 40, server_cpu_ms: 20, mean_ms: 40 },
        }),
        result('mirror-push', { cluster3: { seconds: 12, clone_after_s: 1.1 }, 'node-git-server': { seconds: 10, clone_after_s: 1 } }),
        result('concurrent-repos', { cluster3: { pushes_per_s: 40 }, 'node-git-server': { pushes_per_s: 50 } }),
        result('concurrent-branches', {
          cluster3: { pushes_per_s: 20, p99_ms: 900, errors: 1 },
          'node-git-server': { pushes_per_s: 50, p99_ms: 300 },
        }),
      ],
      params,
      2,
    );
    expect(byName(ts, 'small push p50, cluster3 / node-git-server')).toMatchObject({ value: 1.5, met: true });
    expect(byName(ts, 'small push p50, single / node-git-server')).toMatchObject({ value: 1.13, met: true });
    expect(byName(ts, 'server CPU per small push, cluster3')).toMatchObject({ value: 2.5, met: true });
    expect(byName(ts, '`push --mirror`')).toMatchObject({ value: 1.2, met: true });
    expect(byName(ts, 'clone right after')).toMatchObject({ value: 1.1, met: true });
    expect(byName(ts, '16 clients on 16 repos')).toMatchObject({ value: 0.8, met: true });
    expect(byName(ts, '16 clients on one repo, cluster3 / node-git-server (pushes/s)')).toMatchObject({ value: 0.4, met: false });
    expect(byName(ts, '16 clients on one repo, cluster3 / node-git-server (p99)')).toMatchObject({ value: 3, met: true });
    expect(byName(ts, '16 clients on one repo, cluster3: failed')).toMatchObject({ value: 1, met: false });
  });

  it('leaves a target unjudged when a server did not run, and adds none for workloads not run', () => {
    const ts = targets([result('push-latency', { cluster3: { p50_ms: 60, server_cpu_ms: 50 }, single: { p50_ms: 45 } })], params, 2);
    expect(byName(ts, 'small push p50, cluster3 / node-git-server')).toMatchObject({ value: null, met: null });
    expect(ts.some((t) => t.name.includes('mirror'))).toBe(false);
  });
});
