#!/usr/bin/env node
/**
 * `npm run chaos -- --minutes 10 --nodes 6 --seed 42 [--clients 4] [--replication-factor 3] [--store etcd]`:
 * one seeded chaos run against a local cluster of real node processes; prints the seed, the
 * operation counts by outcome, and PASS or the violations with a minimal history. Exit code 1 on
 * violations, 2 on a run that could not be carried out.
 */
import { writeFile } from 'node:fs/promises';
import { Command, InvalidArgumentError } from 'commander';
import { ALL_FAULTS, type FaultKind } from './faults.js';
import { killAllGit } from './gitcli.js';
import { runChaos } from './run.js';

function positiveNumber(value: string): number {
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0) throw new InvalidArgumentError(`'${value}' is not a positive number`);
  return n;
}

function positiveInt(value: string): number {
  const n = positiveNumber(value);
  if (!Number.isInteger(n)) throw new InvalidArgumentError(`'${value}' is not a positive integer`);
  return n;
}

function faultList(value: string): FaultKind[] {
  if (value === 'none') return [];
  const kinds = value
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  for (const k of kinds)
    if (!(ALL_FAULTS as readonly string[]).includes(k))
      throw new InvalidArgumentError(`unknown fault '${k}' (known: ${ALL_FAULTS.join(', ')})`);
  return kinds as FaultKind[];
}

function storeKind(value: string): 'sqlite' | 'etcd' {
  if (value !== 'sqlite' && value !== 'etcd') throw new InvalidArgumentError(`store must be sqlite or etcd, got '${value}'`);
  return value;
}

interface Options {
  minutes: number;
  nodes: number;
  seed?: number;
  clients: number;
  replicationFactor?: number;
  writeQuorum?: number;
  repos?: number;
  faults?: FaultKind[];
  store: 'sqlite' | 'etcd';
  proxies: boolean;
  gitTimeout: number;
  history?: string;
  quiet?: boolean;
  lfs?: boolean;
}

const program = new Command()
  .name('chaos')
  .description('fault injection against a local git-replication cluster, checked by a history checker')
  .option('--minutes <n>', 'how long clients and faults run', positiveNumber, 1)
  .option('--nodes <n>', 'cluster size', positiveInt, 3)
  .option('--seed <n>', 'seed of every random choice (default: random, printed)', positiveInt)
  .option('--clients <n>', 'concurrent git clients', positiveInt, 4)
  .option('--replication-factor <n>', 'replicas per repo (default min(3, nodes))', positiveInt)
  .option('--write-quorum <n>', 'write quorum W (default majority)', positiveInt)
  .option('--repos <n>', 'repos the clients share (default max(2, nodes/3))', positiveInt)
  .option('--store <kind>', 'coordination store: sqlite, or etcd (a local etcd the run starts; adds the store faults)', storeKind, 'sqlite')
  .option('--faults <kinds>', `comma-separated fault kinds (${ALL_FAULTS.join(', ')}), or none (default: all the store allows)`, faultList)
  .option('--no-proxies', 'no fault proxies on peer links (disables partition and slow)')
  .option('--git-timeout <ms>', 'timeout of each client git command', positiveInt, 20_000)
  .option('--history <file>', 'write the recorded history and final state as JSON')
  .option('--quiet', 'do not print fault events as they happen')
  .option('--lfs', 'add a client uploading and reading Git LFS objects, each acknowledged one checked on every replica after the heal')
  .action(async (o: Options) => {
    const seed = o.seed ?? Math.floor(Math.random() * 1_000_000) + 1;
    const ac = new AbortController();
    const onSignal = (): void => {
      if (ac.signal.aborted) {
        process.stderr.write('chaos: interrupted again, leaving now (node processes may remain)\n');
        killAllGit();
        process.exit(130);
      }
      process.stderr.write('chaos: interrupted: stopping the workload, then healing, checking and stopping the cluster\n');
      ac.abort();
      killAllGit();
    };
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
    try {
      const report = await runChaos({
        seed,
        nodes: o.nodes,
        clients: o.clients,
        durationMs: Math.round(o.minutes * 60_000),
        replicationFactor: o.replicationFactor,
        writeQuorum: o.writeQuorum,
        repos: o.repos,
        faults: o.faults,
        store: o.store,
        proxies: o.proxies,
        gitTimeoutMs: o.gitTimeout,
        lfs: o.lfs === true,
        signal: ac.signal,
        log: (line) => {
          if (!o.quiet) process.stderr.write(`[chaos] ${line}\n`);
        },
      });
      if (o.history)
        await writeFile(o.history, JSON.stringify({ seed, history: report.history, final: report.final, faults: report.faults }, null, 1));
      process.stdout.write(`${report.text}\n`);
      if (!report.result.ok) {
        if (report.logs) process.stdout.write(`\nnode logs (tail):\n${report.logs}\n`);
        process.stdout.write(
          `\nreproduce: npm run chaos -- --seed ${seed} --nodes ${o.nodes} --minutes ${o.minutes} --clients ${o.clients} --store ${o.store}${o.faults ? ` --faults ${o.faults.join(',') || 'none'}` : ''}${o.lfs ? ' --lfs' : ''}\n`,
        );
        process.exitCode = 1;
      }
    } catch (err) {
      process.stderr.write(`chaos: run failed (seed ${seed}): ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
      process.exitCode = 2;
    }
  });

await program.parseAsync(process.argv);
