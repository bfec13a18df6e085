import type { Command } from 'commander';
import { addClientOptions, withApi, type ClientOptions } from './http-client.js';

interface NodesView { nodes: Array<{ id: string; url: string; live: boolean; decommissioned: boolean; replicas: number }>; rebalance: boolean }

/** registerAdmin adds `node list|decommission` and `rebalance`, which call a node's `/admin` API with an admin token. */
export function registerAdmin(program: Command): void {
  const node = program.command('node').description('cluster membership');
  addClientOptions(node.command('list').description('list nodes, liveness and replica counts'))
    .action(async (o: ClientOptions) => withApi(o, async (api) => {
      const res = await api.get<NodesView>('/admin/nodes');
      for (const n of res.nodes) process.stdout.write(`${n.id}\t${n.url}\t${n.live ? 'live' : 'down'}${n.decommissioned ? '\tdecommissioned' : ''}\t${n.replicas} replicas\n`);
    }));
  addClientOptions(node.command('decommission <id>').description('move every replica off a node, then it holds none'))
    .action(async (id: string, o: ClientOptions) => withApi(o, async (api) => {
      await api.post(`/admin/nodes/${encodeURIComponent(id)}/decommission`);
      process.stdout.write(`${id}: decommissioned; its replicas move to other nodes\n`);
    }));
  addClientOptions(program.command('rebalance').description('move replicas toward rendezvous placement over the current nodes (e.g. after adding one)'))
    .action(async (o: ClientOptions) => withApi(o, async (api) => {
      await api.post('/admin/rebalance');
      process.stdout.write('rebalance requested; replicas move in the background\n');
    }));
}
