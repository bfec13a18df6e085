import { spawn, type ChildProcess } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Command } from 'commander';
import { errorMessage } from '../domain/errors.js';

interface UpOptions { nodes: string; basePort: string; data: string; writeQuorum?: string; replicationFactor?: string; logLevel?: string; store?: string }

/** ClusterFile is `<data>/cluster.json`: what `up` started, for scripts and tests. */
export interface ClusterFile {
  readonly store: string;
  readonly nodes: Array<{ id: string; url: string; pid: number; dataDir: string }>;
}

async function waitHealthy(url: string, child: ChildProcess, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`node at ${url} exited with code ${child.exitCode}`);
    try {
      const res = await fetch(`${url}/health`);
      if (res.ok) return;
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`node at ${url} did not become healthy in ${timeoutMs} ms`);
}

/** registerUp adds `git-replication up`: a local cluster of N node processes sharing one store. */
export function registerUp(program: Command): void {
  program.command('up')
    .description('start a local cluster of N nodes on consecutive ports (the quick start)')
    .option('--nodes <n>', 'number of nodes', '3')
    .option('--base-port <port>', 'port of the first node', '3001')
    .option('--data <dir>', 'data directory of the cluster', './data')
    .option('--store <url>', 'coordination store (default sqlite:<data>/cluster.db)')
    .option('--write-quorum <n>', 'replicas that must confirm a write (default majority)')
    .option('--replication-factor <n>', 'replicas per repo (default min(3, nodes))')
    .option('--log-level <level>', 'node log level', 'info')
    .action(async (o: UpOptions) => {
      const n = Number(o.nodes);
      const base = Number(o.basePort);
      if (!Number.isInteger(n) || n < 1 || n > 32) throw new Error('--nodes must be 1-32');
      if (!Number.isInteger(base) || base < 1 || base + n > 65535) throw new Error('--base-port out of range');
      const data = resolve(o.data);
      await mkdir(data, { recursive: true });
      const store = o.store ?? `sqlite:${join(data, 'cluster.db')}`;
      const main = fileURLToPath(new URL('./main.js', import.meta.url));
      const children: Array<{ id: string; url: string; child: ChildProcess; dataDir: string }> = [];
      for (let i = 1; i <= n; i++) {
        const id = `node-${i}`;
        const port = base + i - 1;
        const dataDir = join(data, id);
        const args = [main, 'serve', '--id', id, '--port', String(port), '--data-dir', dataDir, '--store', store, '--log-level', o.logLevel ?? 'info'];
        if (o.writeQuorum) args.push('--write-quorum', o.writeQuorum);
        args.push('--replication-factor', o.replicationFactor ?? String(Math.min(3, n)));
        const child = spawn(process.execPath, args, { stdio: ['ignore', 'inherit', 'inherit'], env: process.env });
        children.push({ id, url: `http://127.0.0.1:${port}`, child, dataDir });
      }
      let stopping = false;
      const stopAll = async (code: number): Promise<void> => {
        if (stopping) return;
        stopping = true;
        process.stderr.write('stopping cluster...\n');
        await Promise.all(children.map(({ child }) => new Promise<void>((res) => {
          if (child.exitCode !== null || child.signalCode !== null) return res();
          const t = setTimeout(() => child.kill('SIGKILL'), 10_000);
          child.once('exit', () => { clearTimeout(t); res(); });
          child.kill('SIGTERM');
        })));
        process.exit(code);
      };
      process.once('SIGINT', () => void stopAll(0));
      process.once('SIGTERM', () => void stopAll(0));
      try {
        await Promise.all(children.map((c) => waitHealthy(c.url, c.child, 60_000)));
      } catch (err) {
        process.stderr.write(`git-replication up: ${errorMessage(err)}\n`);
        await stopAll(1);
        return;
      }
      const file: ClusterFile = { store, nodes: children.map((c) => ({ id: c.id, url: c.url, pid: c.child.pid ?? -1, dataDir: c.dataDir })) };
      await writeFile(join(data, 'cluster.json'), `${JSON.stringify(file, null, 2)}\n`);
      process.stdout.write(`\ngit-replication: ${n} nodes up (store ${store})\n`);
      for (const c of children) process.stdout.write(`  ${c.id}  ${c.url}\n`);
      process.stdout.write(`\ntry:\n  curl -X POST ${children[0]!.url}/repos -H 'content-type: application/json' -d '{"repo_id":"demo/hello"}'\n`);
      process.stdout.write(`  git clone ${children[children.length - 1]!.url}/demo/hello.git\n\nCtrl-C stops the cluster.\n`);
      for (const c of children) {
        c.child.once('exit', (code, signal) => {
          if (!stopping) process.stderr.write(`${c.id} exited (${signal ?? code})\n`);
        });
      }
    });
}
