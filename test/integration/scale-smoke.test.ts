import { spawn } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { ScaleReport } from '../../bench/scale.js';

/** SCALE is the compiled scale measurement (`npm run build:tools`, run by pretest). */
const SCALE = resolve(import.meta.dirname, '../../dist-tools/bench/scale.js');

function runScale(args: string[], timeoutMs: number): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((res) => {
    const child = spawn(process.execPath, [SCALE, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => {
      stdout += d.toString();
    });
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('close', (code) => {
      clearTimeout(timer);
      res({ code, stdout, stderr });
    });
  });
}

describe('npm run scale (small)', () => {
  const dirs: string[] = [];
  afterAll(async () => {
    await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
  });

  // About 35 s on an idle 2-core machine; the timeouts leave room for one shared with other runs.
  it('measures 30 repos on 3 nodes and reports every figure', async () => {
    const out = await mkdtemp(join(tmpdir(), 'gitrep-scale-smoke-'));
    dirs.push(out);
    const r = await runScale(
      ['--repos', '30', '--nodes', '3', '--idle-seconds', '3', '--pushes', '3', '--concurrency', '8', '--out', out],
      170_000,
    );
    expect(r.code, r.stderr).toBe(0);
    const json = (await readdir(out)).find((f) => f.endsWith('.json'))!;
    const report = JSON.parse(await readFile(join(out, json), 'utf8')) as ScaleReport;
    expect(report.creation).toMatchObject({ repos: 20, failures: 0 });
    expect(report.creation.reposPerS).toBeGreaterThan(0);
    // R=3 on 3 nodes: every node holds every repo, the 10 made first included.
    expect(report.spread.replicasPerNode).toEqual({ 'node-1': 30, 'node-2': 30, 'node-3': 30 });
    expect(report.spread.maxDeviationPct).toBe(0);
    expect(Object.keys(report.idle.cpuPctPerNode)).toHaveLength(3);
    for (const v of Object.values(report.idle.cpuPctPerNode)) expect(v).toBeGreaterThanOrEqual(0);
    // Heartbeats alone make store calls every second.
    expect(report.idle.storeOpsPerSByOp.registerNode).toBeGreaterThan(0);
    // A push takes the lock (with the repo state), writes its decision, then the confirmations: at least those three operations.
    expect(report.push.storeOpsPerPushByOp.acquireLockAndRead).toBeGreaterThan(0.5);
    expect(report.push.storeOpsPerPushByOp.commitPush).toBeGreaterThan(0.5);
    expect(report.push.storeOpsPerPushByOp.confirmReplicas).toBeGreaterThan(0.5);
    expect(report.push.p50MsSmall).toBeGreaterThan(0);
    expect(report.push.p50MsLarge).toBeGreaterThan(0);
    expect(report.listing.pageSize).toBe(30);
    for (const v of Object.values(report.memory.rssMbPerNode)) expect(v).toBeGreaterThan(10);
    expect(report.storeBytes.perRepo).toBeGreaterThan(0);
    expect(report.startup.replicas).toBe(30);
    expect(report.startup.cloneMs).toBeGreaterThanOrEqual(report.startup.healthMs);
    const md = await readFile(join(out, json.replace(/\.json$/, '.md')), 'utf8');
    for (const row of [
      'creation',
      'replicas per node',
      'idle CPU per node',
      'idle store operations',
      'small push p50',
      'store operations per push',
      'GET /repos first page',
      'node RSS',
      'store size',
      'start-up after kill -9',
    ])
      expect(md).toContain(`| ${row}`);
  }, 180_000);
});
