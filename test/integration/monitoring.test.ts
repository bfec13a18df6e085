import { execFile, execFileSync } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TestCluster } from '../helpers/cluster.js';
import { commitFile, gitOk, workRepo } from '../helpers/git.js';

const ROOT = join(import.meta.dirname, '..', '..');
const ALERTS = join(ROOT, 'docs', 'monitoring', 'alerts.yml');
const DASHBOARD = join(ROOT, 'docs', 'monitoring', 'grafana-dashboard.json');

function promtoolPath(): string | null {
  try {
    return execFileSync('sh', ['-c', 'command -v promtool'], { encoding: 'utf8' }).trim() || null;
  } catch {
    return null;
  }
}

const PROMTOOL = promtoolPath();
if (!PROMTOOL) process.stderr.write('promtool check skipped: no promtool binary (apt-get install prometheus)\n');

/** metricNames lists the gitrep_* series an expression text names. */
function metricNames(text: string): Set<string> {
  return new Set(text.match(/\bgitrep_[a-zA-Z0-9_]+/g) ?? []);
}

/** dashboardExprs collects every `expr` (and template query) in a Grafana dashboard. */
function dashboardExprs(node: unknown, out: string[] = []): string[] {
  if (Array.isArray(node)) for (const v of node) dashboardExprs(v, out);
  else if (node && typeof node === 'object') {
    for (const [k, v] of Object.entries(node)) {
      if ((k === 'expr' || k === 'definition') && typeof v === 'string') out.push(v);
      else dashboardExprs(v, out);
    }
  }
  return out;
}

/**
 * exported lists the series names a /metrics answer declares (`# TYPE` lines), with a
 * histogram's `_bucket`, `_sum` and `_count` (a labelled series has no sample until observed).
 */
function exported(text: string): Set<string> {
  const names = new Set<string>();
  for (const m of text.matchAll(/^# TYPE (\S+) (\S+)$/gm)) {
    const [, name, type] = m as unknown as [string, string, string];
    names.add(name);
    if (type === 'histogram') for (const s of ['_bucket', '_sum', '_count']) names.add(name + s);
    if (type === 'summary') for (const s of ['_sum', '_count']) names.add(name + s);
  }
  return names;
}

/** sample reads one sample's value (labels given in the exposition's order), or 0 if absent. */
function sample(text: string, series: string): number {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line ? Number(line.slice(series.length + 1)) : 0;
}

describe('monitoring: alert rules, dashboard and the metrics they name', { timeout: 120_000 }, () => {
  it.skipIf(!PROMTOOL)(
    `promtool check rules docs/monitoring/alerts.yml${PROMTOOL ? '' : ' (skipped: promtool not installed)'}`,
    async () => {
      const { stdout } = await promisify(execFile)(PROMTOOL!, ['check', 'rules', ALERTS]);
      expect(stdout).toMatch(/SUCCESS: \d+ rules found/);
    },
  );

  it('the dashboard is a Grafana dashboard with panels and queries', async () => {
    const dash = JSON.parse(await readFile(DASHBOARD, 'utf8')) as {
      title?: string;
      uid?: string;
      panels?: Array<{ type: string; targets?: unknown[] }>;
    };
    expect(dash.title).toBe('git-replication');
    expect(dash.uid).toBeTruthy();
    const graphs = (dash.panels ?? []).filter((p) => p.type !== 'row');
    expect(graphs.length).toBeGreaterThan(15);
    for (const p of graphs) expect(p.targets?.length ?? 0).toBeGreaterThan(0);
  });

  describe('on a running 3-node cluster', () => {
    let c: TestCluster;
    beforeAll(async () => {
      c = await TestCluster.start({ nodes: 3 });
    });
    afterAll(async () => {
      await c?.destroy();
    });

    const scrape = async (i: number): Promise<string> => {
      const res = await fetch(`${c.url(i)}/metrics`);
      expect(res.status).toBe(200);
      return res.text();
    };

    it('exports every series the alert rules and the dashboard name, and a push moves the counters', async () => {
      const before = await scrape(1);
      await c.createRepo(1, 'mon/hello');
      const work = await workRepo();
      await commitFile(work, 'a.txt', 'a\n', 'second');
      await gitOk(['push', '-q', c.repoUrl(1, 'mon/hello'), 'main'], { cwd: work });
      await gitOk(['clone', '-q', c.repoUrl(1, 'mon/hello'), join(work, 'clone')]);
      const text = await scrape(1);

      const have = exported(text);
      const wanted = new Set([
        ...metricNames(await readFile(ALERTS, 'utf8')),
        ...dashboardExprs(JSON.parse(await readFile(DASHBOARD, 'utf8'))).flatMap((e) => [...metricNames(e)]),
      ]);
      expect(wanted.size).toBeGreaterThan(20);
      const missing = [...wanted].filter((n) => !have.has(n));
      expect(missing, `named in docs/monitoring but not exported by a node: ${missing.join(', ')}`).toEqual([]);

      // The push: one committed push transaction, one push operation, bytes both ways, a
      // prepare and a commit per replica.
      expect(
        sample(text, 'gitrep_txns_total{kind="push",outcome="commit"}') - sample(before, 'gitrep_txns_total{kind="push",outcome="commit"}'),
      ).toBe(1);
      expect(sample(text, 'gitrep_txns_total{kind="create",outcome="commit"}')).toBe(1);
      expect(sample(text, 'gitrep_git_operation_seconds_count{operation="push",outcome="ok"}')).toBe(1);
      expect(sample(text, 'gitrep_git_operation_seconds_count{operation="fetch",outcome="ok"}')).toBeGreaterThanOrEqual(1);
      expect(sample(text, 'gitrep_git_bytes_total{service="git-receive-pack",direction="in"}')).toBeGreaterThan(0);
      expect(sample(text, 'gitrep_git_bytes_total{service="git-upload-pack",direction="out"}')).toBeGreaterThan(0);
      for (const n of ['node-1', 'node-2', 'node-3']) {
        expect(sample(text, `gitrep_prepare_seconds_count{peer="${n}"}`), n).toBe(2);
        expect(sample(text, `gitrep_commit_seconds_count{peer="${n}"}`), n).toBeGreaterThanOrEqual(1);
      }
      // The node's view of the cluster and of itself.
      expect(sample(text, 'gitrep_cluster_nodes{state="live"}')).toBe(3);
      expect(sample(text, 'gitrep_cluster_nodes{state="down"}')).toBe(0);
      expect(sample(text, 'gitrep_store_up')).toBe(1);
      expect(sample(text, 'gitrep_store_heartbeat_seconds_count')).toBeGreaterThan(0);
      expect(sample(text, 'gitrep_node_lease_age_seconds')).toBeLessThan(5);
      expect(sample(text, 'gitrep_data_dir_free_bytes')).toBeGreaterThan(0);
      expect(sample(text, 'gitrep_data_dir_size_bytes')).toBeGreaterThanOrEqual(sample(text, 'gitrep_data_dir_free_bytes'));
    });

    it('a node killed with SIGKILL shows as down, and its repair after restart is counted', async () => {
      await c.kill(3);
      const work = await workRepo();
      await gitOk(['push', '-q', '-f', c.repoUrl(1, 'mon/hello'), 'main'], { cwd: work });
      const deadline = Date.now() + 15_000;
      let text = '';
      while (Date.now() < deadline) {
        text = await scrape(1);
        if (sample(text, 'gitrep_cluster_nodes{state="down"}') === 1) break;
        await new Promise((r) => setTimeout(r, 250));
      }
      expect(sample(text, 'gitrep_cluster_nodes{state="down"}')).toBe(1);
      expect(sample(text, 'gitrep_cluster_nodes{state="live"}')).toBe(2);
      await c.restart(3);
      await c.waitInSync('mon/hello', 1, 60_000);
      const three = await scrape(3);
      expect(sample(three, 'gitrep_repairs_total{outcome="ok"}')).toBeGreaterThanOrEqual(1);
      expect(sample(three, 'gitrep_repair_seconds_count')).toBeGreaterThanOrEqual(1);
    });
  });
});
