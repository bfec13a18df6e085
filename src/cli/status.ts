import type { Command } from 'commander';
import { addClientOptions, CliError, withApi, type ApiClient, type ClientOptions } from './http-client.js';

interface HealthView { server_id: string; status: string; peer_nodes: Array<{ id: string; url: string; live: boolean }> }
interface RepoView { repo_id: string; generation: number; replicas: Array<{ node: string; state: string; generation: number | null }> }

/** registerStatus adds `git-replication status`: cluster health and replica states via the HTTP API. */
export function registerStatus(program: Command): void {
  addClientOptions(program.command('status').description('show nodes, repos and stale or repairing replicas'))
    .action(async (o: ClientOptions) => withApi(o, async (api) => {
      const health = await api.get<HealthView>('/health');
      process.stdout.write(`node ${health.server_id}: ${health.status}\n`);
      for (const p of health.peer_nodes) process.stdout.write(`  peer ${p.id} ${p.url} ${p.live ? 'live' : 'down'}\n`);
      const list = await api.get<{ repos: string[] }>('/repos');
      let stale = 0;
      let total = 0;
      for (const id of list.repos) {
        const r = await repoView(api, id);
        for (const rep of r?.replicas ?? []) {
          total++;
          if (rep.state !== 'in_sync') {
            stale++;
            process.stdout.write(`  ${id} on ${rep.node}: ${rep.state} (generation ${rep.generation ?? '-'} of ${r?.generation ?? '-'})\n`);
          }
        }
      }
      process.stdout.write(`${list.repos.length} repos, ${total} replicas, ${stale} not in sync\n`);
    }));
}

/** repoView reads one repo's replicas; null when it was deleted after the listing. */
async function repoView(api: ApiClient, id: string): Promise<RepoView | null> {
  try {
    return await api.get<RepoView>(`/repos/${id.split('/').map(encodeURIComponent).join('/')}`);
  } catch (err) {
    if (err instanceof CliError && err.status === 404) return null;
    throw err;
  }
}
