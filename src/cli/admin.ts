import type { Command } from 'commander';

async function post(url: string, path: string): Promise<void> {
  const res = await fetch(`${url}${path}`, { method: 'POST' });
  const body = await res.text();
  if (!res.ok) {
    process.stderr.write(`git-replication: ${res.status} ${body}\n`);
    process.exit(1);
  }
  process.stdout.write(`${body}\n`);
}

/** registerAdmin adds `node list|decommission` and `rebalance`, which talk to a node's HTTP API. */
export function registerAdmin(program: Command): void {
  const node = program.command('node').description('cluster membership');
  node.command('list')
    .option('--url <url>', 'any node of the cluster', 'http://127.0.0.1:3001')
    .action(async (o: { url: string }) => {
      const res = (await (await fetch(`${o.url}/admin/nodes`)).json()) as { nodes: Array<{ id: string; url: string; live: boolean; decommissioned: boolean; replicas: number }> };
      for (const n of res.nodes) process.stdout.write(`${n.id}\t${n.url}\t${n.live ? 'live' : 'down'}${n.decommissioned ? '\tdecommissioned' : ''}\t${n.replicas} replicas\n`);
    });
  node.command('decommission <id>')
    .description('move every replica off a node, then it holds none')
    .option('--url <url>', 'any node of the cluster', 'http://127.0.0.1:3001')
    .action(async (id: string, o: { url: string }) => post(o.url, `/admin/nodes/${encodeURIComponent(id)}/decommission`));
  program.command('rebalance')
    .description('move replicas toward rendezvous placement over the current nodes (e.g. after adding one)')
    .option('--url <url>', 'any node of the cluster', 'http://127.0.0.1:3001')
    .action(async (o: { url: string }) => post(o.url, '/admin/rebalance'));
}
