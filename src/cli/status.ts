import type { Command } from 'commander';

interface RepoView { repo_id: string; generation: number; replicas: Array<{ node: string; state: string; generation: number | null }> }

/** registerStatus adds `git-replication status`: cluster health and replica states via the HTTP API. */
export function registerStatus(program: Command): void {
  program.command('status')
    .description('show nodes, repos and stale or repairing replicas')
    .option('--url <url>', 'any node of the cluster', 'http://127.0.0.1:3001')
    .action(async (o: { url: string }) => {
      const health = (await (await fetch(`${o.url}/health`)).json()) as { server_id: string; status: string; peer_nodes: Array<{ id: string; url: string; live: boolean }> };
      process.stdout.write(`node ${health.server_id}: ${health.status}\n`);
      for (const p of health.peer_nodes) process.stdout.write(`  peer ${p.id} ${p.url} ${p.live ? 'live' : 'down'}\n`);
      const list = (await (await fetch(`${o.url}/repos`)).json()) as { repos: string[] };
      let stale = 0;
      let total = 0;
      for (const id of list.repos) {
        const r = (await (await fetch(`${o.url}/repos/${id}`)).json()) as RepoView;
        for (const rep of r.replicas) {
          total++;
          if (rep.state !== 'in_sync') {
            stale++;
            process.stdout.write(`  ${id} on ${rep.node}: ${rep.state} (generation ${rep.generation ?? '-'} of ${r.generation})\n`);
          }
        }
      }
      process.stdout.write(`${list.repos.length} repos, ${total} replicas, ${stale} not in sync\n`);
    });
}
