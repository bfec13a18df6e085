import type { Command } from 'commander';
import { parseRepoArg, repoPath } from './args.js';
import { addClientOptions, ApiClient, CliError, resolveToken, withApi, type ClientOptions } from './http-client.js';
import { Progress } from './progress.js';
import { listRepos } from './repos.js';
import { examples } from './help.js';

interface RepoView {
  repo_id: string;
  generation: number;
  replicas: Array<{ node: string; state: string; generation: number | null; repair?: { objectsDone?: number; objectsTotal?: number } }>;
}
interface NodesView {
  nodes: Array<{ id: string; url: string; live: boolean }>;
}

/** nodeClients opens a client per node of the cluster (the replica operations run on the node that holds the replica). */
async function nodeClients(api: ApiClient, o: ClientOptions): Promise<Map<string, ApiClient>> {
  const token = await resolveToken(o);
  const { nodes } = await api.get<NodesView>('/admin/nodes');
  return new Map(nodes.map((n) => [n.id, new ApiClient(n.url, token)]));
}

function replicaPath(repoId: string, op: 'verify' | 'repair'): string {
  return `/admin${repoPath(repoId).replace(/^\/repos/, '/replicas')}/${op}`;
}

/** describe is one replica's state as a line. */
function describe(r: RepoView['replicas'][number], generation: number): string {
  const progress = r.repair?.objectsTotal ? ` (${r.repair.objectsDone ?? 0} of ${r.repair.objectsTotal} objects)` : '';
  return `${r.node}: ${r.state}${r.state === 'in_sync' ? '' : ` at generation ${r.generation ?? '-'} of ${generation}`}${progress}`;
}

/** objectsNote names the object counts of replicas being copied, for the progress line. */
function objectsNote(view: RepoView): string {
  const copying = view.replicas.filter((r) => r.state !== 'in_sync' && r.repair?.objectsTotal);
  return copying.map((r) => `; ${r.node} ${r.repair?.objectsDone ?? 0} of ${r.repair?.objectsTotal ?? 0} objects`).join('');
}

/**
 * registerMaintenance adds `repair <repo>` (repair every replica not in sync, on the node that
 * holds it, and follow it until all are in sync) and `verify <repo>|--all` (checksum and fsck
 * of every replica, on its node; a mismatch is marked for repair and exits 1).
 */
export function registerMaintenance(program: Command): void {
  addClientOptions(
    program
      .command('repair')
      .argument('<repo>', 'owner/name', parseRepoArg)
      .description('repair the replicas of a repo that are not in sync, and wait for them')
      .option('--timeout <seconds>', 'how long to wait for every replica to be in sync', '120')
      .addHelpText(
        'after',
        examples('git-replication repair acme/site', 'git-replication repair acme/site --url http://10.0.0.2:3000 --timeout 600'),
      ),
  ).action(async (repoId: string, o: ClientOptions & { timeout: string }) =>
    withApi(o, async (api) => {
      const clients = await nodeClients(api, o);
      let view = await api.get<RepoView>(repoPath(repoId));
      const progress = new Progress(process.stderr, `repair ${repoId}`, view.replicas.length);
      for (const r of view.replicas.filter((x) => x.state !== 'in_sync')) {
        const client = clients.get(r.node);
        if (!client) throw new CliError(`node ${r.node} is not registered`);
        const res = await client
          .post<{ in_sync: boolean }>(replicaPath(repoId, 'repair'))
          .catch((err: unknown) => ({ in_sync: false, error: err instanceof Error ? err.message : String(err) }));
        progress.print(
          `${r.node}: ${res.in_sync ? 'repaired, in sync' : `repair started${'error' in res ? ` (${res.error})` : ''}`}`,
          process.stdout,
        );
      }
      const deadline = Date.now() + Number(o.timeout) * 1000;
      let last = '';
      try {
        for (;;) {
          view = await api.get<RepoView>(repoPath(repoId));
          const lines = view.replicas.map((r) => describe(r, view.generation)).join('; ');
          if (lines !== last) progress.print(`${repoId}: ${lines}`, process.stdout);
          last = lines;
          const inSync = view.replicas.filter((r) => r.state === 'in_sync').length;
          progress.update(inSync, `replicas in sync${objectsNote(view)}`, view.replicas.length);
          if (inSync === view.replicas.length) return;
          if (Date.now() > deadline) throw new CliError(`${repoId}: not every replica in sync after ${o.timeout} s`);
          await new Promise((r) => setTimeout(r, 500));
        }
      } finally {
        progress.end();
      }
    }),
  );

  addClientOptions(
    program
      .command('verify')
      .argument('[repo]', 'owner/name', parseRepoArg)
      .description('check every replica of a repo (or of all with --all) against the store: checksum and fsck')
      .option('--all', 'every repository')
      .addHelpText(
        'after',
        examples(
          'git-replication verify acme/site',
          'git-replication verify --all 2>/dev/null || echo "some replicas were marked for repair"',
        ),
      ),
  ).action(async (repo: string | undefined, o: ClientOptions & { all?: boolean }) =>
    withApi(o, async (api) => {
      if (!repo && !o.all) throw new CliError('name a repository, or --all');
      const repos = repo ? [repo] : (await listRepos(api, 1000, null, true)).repos;
      const clients = await nodeClients(api, o);
      let bad = 0;
      const progress = new Progress(process.stderr, 'verify', repos.length);
      try {
        for (const [i, repoId] of repos.entries()) {
          progress.update(i, 'repos verified');
          const view = await api.get<RepoView>(repoPath(repoId));
          for (const r of view.replicas) {
            const client = clients.get(r.node);
            const res = client
              ? await client
                  .post<{ result: string }>(replicaPath(repoId, 'verify'))
                  .catch((err: unknown) => ({ result: `unreachable (${err instanceof Error ? err.message : String(err)})` }))
              : { result: 'node not registered' };
            if (res.result === 'stale' || res.result === 'missing') bad++;
            progress.print(
              `${repoId} on ${r.node}: ${res.result === 'stale' || res.result === 'missing' ? `${res.result}: marked for repair` : res.result}`,
              process.stdout,
            );
          }
        }
        progress.update(repos.length, 'repos verified');
      } finally {
        progress.end();
      }
      process.stdout.write(`${repos.length} repos verified, ${bad} replicas marked for repair\n`);
      if (bad > 0) process.exitCode = 1;
    }),
  );
}
