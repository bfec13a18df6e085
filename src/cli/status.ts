import type { Command } from 'commander';
import { listRepos } from './repos.js';
import { addClientOptions, CliError, withApi, type ApiClient, type ClientOptions } from './http-client.js';
import { examples } from './help.js';

interface HealthView {
  server_id: string;
  status: string;
  writes?: string;
  version?: string;
  peer_nodes: Array<{ id: string; url: string; live: boolean }>;
}
interface RepoView {
  repo_id: string;
  generation: number;
  replicas: Array<{ node: string; state: string; generation: number | null }>;
}

/** colour paints a word on a terminal (green good, red bad, yellow in between) and leaves it plain elsewhere. */
function colour(text: string, kind: 'good' | 'bad' | 'warn'): string {
  if (!process.stdout.isTTY || process.env.NO_COLOR) return text;
  const code = kind === 'good' ? 32 : kind === 'bad' ? 31 : 33;
  return `\u001b[${code}m${text}\u001b[0m`;
}

/** registerStatus adds `git-replication status`: cluster health and replica states via the HTTP API. */
export function registerStatus(program: Command): void {
  addClientOptions(
    program
      .command('status')
      .description('show nodes, repos and stale or repairing replicas')
      .option('--json', 'print one JSON document (nodes, replicas not in sync, counts) for scripts')
      .addHelpText(
        'after',
        examples('git-replication status', 'git-replication status --url http://10.0.0.2:3000 --json | jq .not_in_sync'),
      ),
  ).action(async (o: ClientOptions & { json?: boolean }) =>
    withApi(o, async (api) => {
      const health = await api.get<HealthView>('/health');
      const { repos } = await listRepos(api, 1000, null, true);
      const notInSync: Array<{ repo: string; node: string; state: string; generation: number | null; of: number }> = [];
      let total = 0;
      for (const id of repos) {
        const r = await repoView(api, id);
        for (const rep of r?.replicas ?? []) {
          total++;
          if (rep.state !== 'in_sync')
            notInSync.push({ repo: id, node: rep.node, state: rep.state, generation: rep.generation, of: r?.generation ?? 0 });
        }
      }
      if (o.json) {
        const doc = {
          node: { id: health.server_id, status: health.status, writes: health.writes ?? null, version: health.version ?? null },
          peers: health.peer_nodes,
          repos: repos.length,
          replicas: total,
          not_in_sync: notInSync,
        };
        process.stdout.write(`${JSON.stringify(doc, null, 2)}\n`);
        return;
      }
      process.stdout.write(
        `node ${health.server_id}: ${colour(health.status, health.status === 'healthy' ? 'good' : 'bad')}${health.writes && health.writes !== 'available' ? ` (writes ${health.writes})` : ''}\n`,
      );
      for (const p of health.peer_nodes)
        process.stdout.write(`  peer ${p.id} ${p.url} ${p.live ? colour('live', 'good') : colour('down', 'bad')}\n`);
      for (const n of notInSync)
        process.stdout.write(
          `  ${n.repo} on ${n.node}: ${colour(n.state, n.state === 'repairing' ? 'warn' : 'bad')} (generation ${n.generation ?? '-'} of ${n.of})\n`,
        );
      const summary = `${repos.length} repos, ${total} replicas, ${notInSync.length} not in sync`;
      process.stdout.write(`${notInSync.length === 0 ? colour(summary, 'good') : colour(summary, 'warn')}\n`);
    }),
  );
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
