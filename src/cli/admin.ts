import type { Command } from 'commander';
import { addClientOptions, CliError, withApi, type ApiClient, type ClientOptions } from './http-client.js';
import { Progress } from './progress.js';
import { examples } from './help.js';

interface NodesView {
  nodes: Array<{ id: string; url: string; live: boolean; decommissioned: boolean; replicas: number }>;
  rebalance: boolean;
  repos: number;
  misplaced: number;
}

/** followRebalance polls the node list until every repo is on its placement, showing how many are. */
async function followRebalance(api: ApiClient, timeoutSeconds: number): Promise<void> {
  const deadline = Date.now() + timeoutSeconds * 1000;
  const progress = new Progress(process.stderr, 'rebalance', 0);
  try {
    for (;;) {
      const view = await api.get<NodesView>('/admin/nodes');
      progress.update(view.repos - view.misplaced, 'repos on their placement', view.repos);
      if (view.misplaced === 0) break;
      if (Date.now() > deadline)
        throw new CliError(
          `rebalance: ${view.misplaced} of ${view.repos} repos not yet on their placement after ${timeoutSeconds} s; replicas keep moving in the background`,
        );
      await new Promise((r) => setTimeout(r, 1000));
    }
  } finally {
    progress.end();
  }
}

/** registerAdmin adds `node list|decommission` and `rebalance`, which call a node's `/admin` API with an admin token. */
export function registerAdmin(program: Command): void {
  const node = program
    .command('node')
    .description('cluster membership')
    .addHelpText('after', examples('git-replication node list', 'git-replication node decommission node-3'));
  addClientOptions(
    node
      .command('list')
      .description('list nodes, liveness and replica counts')
      .addHelpText('after', examples('git-replication node list', 'git-replication node list --url http://10.0.0.2:3000')),
  ).action(async (o: ClientOptions) =>
    withApi(o, async (api) => {
      const res = await api.get<NodesView>('/admin/nodes');
      for (const n of res.nodes)
        process.stdout.write(
          `${n.id}\t${n.url}\t${n.live ? 'live' : 'down'}${n.decommissioned ? '\tdecommissioned' : ''}\t${n.replicas} replicas\n`,
        );
    }),
  );
  addClientOptions(
    node
      .command('decommission <id>')
      .description('move every replica off a node, then it holds none')
      .addHelpText(
        'after',
        examples('git-replication node decommission node-3', 'git-replication node decommission node-3 --url http://10.0.0.2:3000'),
      ),
  ).action(async (id: string, o: ClientOptions) =>
    withApi(o, async (api) => {
      await api.post(`/admin/nodes/${encodeURIComponent(id)}/decommission`);
      process.stdout.write(`${id}: decommissioned; its replicas move to other nodes\n`);
    }),
  );
  addClientOptions(
    program
      .command('rebalance')
      .description(
        'move replicas toward rendezvous placement over the current nodes (e.g. after adding one), and follow until every repo is placed',
      )
      .option('--no-wait', 'return once requested; replicas move in the background')
      .option('--timeout <seconds>', 'how long to follow the moves', '600')
      .addHelpText('after', examples('git-replication rebalance', 'git-replication rebalance --no-wait')),
  ).action(async (o: ClientOptions & { wait: boolean; timeout: string }) =>
    withApi(o, async (api) => {
      await api.post('/admin/rebalance');
      process.stdout.write('rebalance requested; replicas move in the background\n');
      if (o.wait) {
        await followRebalance(api, Number(o.timeout));
        process.stdout.write('rebalance done: every repo is on its placement\n');
      }
    }),
  );
}
