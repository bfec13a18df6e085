import { spawn } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { BenchResult } from '../../bench/report.js';

/** BENCH is the compiled benchmark (`npm run build:tools`, run by pretest). */
const BENCH = resolve(import.meta.dirname, '../../dist-tools/bench/main.js');
const SERVERS = ['cluster3', 'single', 'node-git-server', 'http-backend'];
const WORKLOADS = [
  'push-latency',
  'clone-mirror',
  'mirror-push',
  'concurrent-repos',
  'concurrent-branches',
  'concurrent-clones',
  'big-clone',
  'repair',
];
/** ONLY_CLUSTERS are the workloads that run on the project's multi-node cluster alone. */
const ONLY_CLUSTERS = new Set(['repair']);

function runCli(args: string[], timeoutMs: number): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((res) => {
    const child = spawn(process.execPath, [BENCH, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => {
      stdout += d.toString();
    });
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
    });
    // SIGINT lets the benchmark stop its servers before it exits.
    const timer = setTimeout(() => child.kill('SIGINT'), timeoutMs);
    child.on('close', (code) => {
      clearTimeout(timer);
      res({ code, stdout, stderr });
    });
  });
}

describe('bench --quick', () => {
  const dirs: string[] = [];
  afterAll(async () => {
    await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
  });

  // --quick takes about 45 s on an idle 2-core machine; the timeouts leave room for one shared with other test runs.
  it('runs every workload against every server and writes the JSON and Markdown results', async () => {
    const out = await mkdtemp(join(tmpdir(), 'gitrep-bench-smoke-'));
    dirs.push(out);
    const r = await runCli(['--quick', '--out', out], 240_000);
    expect(r.code, `stdout:\n${r.stdout.slice(-4000)}\nstderr:\n${r.stderr.slice(-4000)}`).toBe(0);

    const files = await readdir(out);
    const json = files.find((f) => /^bench-.*\.json$/.test(f));
    expect(json).toBeDefined();
    expect(files).toContain(json!.replace(/\.json$/, '.md'));
    const result = JSON.parse(await readFile(join(out, json!), 'utf8')) as BenchResult;

    expect(result.mode).toBe('quick');
    expect(result.complete).toBe(true);
    expect(result.servers.map((s) => s.id).sort()).toEqual([...SERVERS].sort());
    expect(result.servers.every((s) => s.started)).toBe(true);
    expect(result.workloads.map((w) => w.id)).toEqual(WORKLOADS);
    // The quick suite's warm-up (2 pushes per server) ran and none of its pushes failed.
    expect(result.params.warmup).toBe(2);
    expect(result.problems.filter((p) => p.startsWith('warm-up'))).toEqual([]);
    expect(r.stderr).toContain('warm-up: 2 untimed pushes to each server');
    for (const w of result.workloads) {
      const applies = ONLY_CLUSTERS.has(w.id) ? ['cluster3'] : SERVERS;
      expect(Object.keys(w.servers).sort(), w.id).toEqual([...applies].sort());
      for (const s of applies) {
        const runs = w.servers[s as keyof typeof w.servers];
        expect(runs?.rounds.length, `${w.id} on ${s}: ${runs?.errors.join('; ') ?? 'missing'}`).toBeGreaterThan(0);
        expect(runs?.median[w.primary], `${w.id} on ${s}: median ${w.primary}`).toEqual(expect.any(Number));
      }
    }
    expect(r.stdout).toContain('medians:');
    expect(r.stdout).toContain('ratios');
  }, 260_000);
});
