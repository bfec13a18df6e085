#!/usr/bin/env node
/**
 * `npm run bench -- [--quick] [--rounds N] [--only 1,5] [--out DIR]`: the benchmark suite
 * (docs/BENCHMARKS.md). It compares a 3-node cluster, a single node, node-git-server and git
 * http-backend on the same machine, alternating between them, and writes
 * `<out>/bench-<timestamp>.json` and `.md`. A development tool: it is not part of the shipped CLI
 * (node-git-server is a devDependency).
 */
import { Command, InvalidArgumentError } from 'commander';
import { errorMessage } from '../src/domain/errors.js';
import { runBench } from './run.js';

/** intFrom parses a whole number of at least `min` (1: positive, 0: none or more). */
function intFrom(min: number): (value: string) => number {
  return (value) => {
    const n = Number(value);
    if (!Number.isInteger(n) || n < min)
      throw new InvalidArgumentError(`'${value}' is not ${min === 1 ? 'a positive integer' : `a whole number of at least ${min}`}`);
    return n;
  };
}
const positiveInt = intFrom(1);

interface BenchCliOptions {
  quick?: boolean;
  rounds?: number;
  clients?: number;
  pushesPerClient?: number;
  warmup?: number;
  out: string;
  only?: string;
}

const program = new Command('bench')
  .description('run the benchmark suite against this project and two reference git servers')
  .option('--quick', 'a tiny version of every workload (CI smoke check: only checks that everything ran)')
  .option('--rounds <n>', 'rounds per workload (default 3, 1 with --quick)', positiveInt)
  .option('--clients <n>', 'clients of the concurrent push workloads 4 and 5 (default 16)', positiveInt)
  .option('--pushes-per-client <n>', 'pushes each client of workloads 4 and 5 makes, one after another (default 4)', positiveInt)
  .option(
    '--warmup <n>',
    'untimed pushes each server takes before the first workload, so the nodes run compiled code as a server that has run a while does (default 300, 2 with --quick; 0: none)',
    intFrom(0),
  )
  .option('--out <dir>', 'directory for the JSON and Markdown results', 'bench/results')
  .option(
    '--only <workloads>',
    'comma-separated workloads, by number or id: 1 push-latency, 2 clone-mirror, 3 mirror-push, 4 concurrent-repos, 5 concurrent-branches, 6 concurrent-clones, 7 big-clone, 8 repair (clusters only)',
  )
  .addHelpText(
    'after',
    '\nExamples:\n  npm run bench -- --rounds 1\n  npm run bench -- --only 1,push-latency,7\n  npm run bench -- --only 5 --clients 64\n  npm run bench -- --only 5 --pushes-per-client 60\n  npm run bench -- --quick --out /tmp/b',
  )
  .action(async (o: BenchCliOptions) => {
    try {
      const { result } = await runBench({
        quick: o.quick ?? false,
        rounds: o.rounds,
        out: o.out,
        only: o.only,
        ...(o.clients ? { clients: o.clients } : {}),
        ...(o.pushesPerClient ? { pushesPerClient: o.pushesPerClient } : {}),
        ...(o.warmup !== undefined ? { warmup: o.warmup } : {}),
      });
      if (!result.complete) process.exitCode = 1;
    } catch (err) {
      process.stderr.write(`bench: ${errorMessage(err)}\n`);
      process.exitCode = 1;
    }
  });

await program.parseAsync(process.argv);
