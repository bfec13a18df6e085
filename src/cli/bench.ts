import type { Command } from 'commander';
import { errorMessage } from '../domain/errors.js';

interface BenchCliOptions { quick?: boolean; rounds?: string; out: string; only?: string }

/**
 * registerBench adds `git-replication bench`: the benchmark suite (docs/BENCHMARKS.md). It
 * compares a 3-node cluster, a single node, node-git-server and git http-backend on the same
 * machine, alternating between them, and writes `<out>/bench-<timestamp>.json` and `.md`.
 */
export function registerBench(program: Command): void {
  program.command('bench')
    .description('run the benchmark suite against this project and two reference git servers')
    .option('--quick', 'a tiny version of every workload (CI smoke check: only checks that everything ran)')
    .option('--rounds <n>', 'rounds per workload (default 3, 1 with --quick)')
    .option('--out <dir>', 'directory for the JSON and Markdown results', 'bench/results')
    .option('--only <workloads>', 'comma-separated workloads, by number or id: 1 push-latency, 2 clone-mirror, 3 mirror-push, 4 concurrent-repos, 5 concurrent-branches, 6 concurrent-clones, 7 big-clone, 8 repair (clusters only)')
    .action(async (o: BenchCliOptions) => {
      // Loaded on demand: `serve` never pays for the benchmark's modules.
      const { runBench } = await import('../bench/run.js');
      let rounds: number | undefined;
      if (o.rounds !== undefined) {
        rounds = Number(o.rounds);
        if (!Number.isInteger(rounds) || rounds < 1) {
          process.stderr.write(`git-replication bench: --rounds must be a positive integer, got '${o.rounds}'\n`);
          process.exit(2);
        }
      }
      try {
        const { result } = await runBench({ quick: o.quick ?? false, rounds, out: o.out, only: o.only });
        if (!result.complete) process.exitCode = 1;
      } catch (err) {
        process.stderr.write(`git-replication bench: ${errorMessage(err)}\n`);
        process.exitCode = 1;
      }
    });
}
