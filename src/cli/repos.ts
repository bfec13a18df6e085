import { Argument, type Command } from 'commander';
import {
  commandGroup,
  parseCursorArg,
  parseGranteeArg,
  parseLimitArg,
  parseRepoArg,
  printAnswer,
  repoPath,
  ROLES,
  type JsonOption,
} from './args.js';
import { addClientOptions, withApi, type ApiClient, type ClientOptions } from './http-client.js';
import { examples } from './help.js';

type Options = ClientOptions & JsonOption;

interface Created {
  repo_id: string;
  visibility: string;
  replicas: string[];
  write_quorum: number;
}
interface RepoPage {
  repos: string[];
  count: number;
  next_cursor: string | null;
}
interface RepoView {
  repo_id: string;
  visibility: string;
  generation: number;
  write_quorum: number;
  replicas: Array<{ node: string; generation: number | null; state: string; live: boolean }>;
}
interface Grants {
  repo_id: string;
  owner: string;
  visibility: string;
  grants: Array<{ grantee: string; role: string }>;
}

const repoArg = (): Argument => new Argument('<owner/name>').argParser(parseRepoArg);
const granteeArg = (): Argument => new Argument('<grantee>', 'user:NAME, org:NAME, or NAME for user:NAME').argParser(parseGranteeArg);

/**
 * registerRepos adds `repo create|list|show|delete` and the access commands
 * `repo visibility|grant|revoke|grants`.
 */
export function registerRepos(program: Command): void {
  const repo = commandGroup(program, 'repo', 'repositories, their visibility and grants').addHelpText(
    'after',
    examples(
      'git-replication repo create acme/site',
      'git-replication repo list --all',
      'git-replication repo grant acme/site user:bob write',
    ),
  );
  registerRepoLifecycle(repo);
  registerRepoAccess(repo);
}

function registerRepoLifecycle(repo: Command): void {
  addClientOptions(
    repo
      .command('create')
      .description('create a repository on its replicas (private unless --public)')
      .addHelpText('after', examples('git-replication repo create acme/site', 'git-replication repo create acme/docs --public --json'))
      .addArgument(repoArg()),
  )
    .option('--public', 'anyone may read it')
    .option('--json', 'print the JSON answer')
    .action(async (id: string, o: Options & { public?: boolean }) =>
      withApi(o, async (api) => {
        const res = await api.post<Created>('/repos', { repo_id: id, visibility: o.public ? 'public' : 'private' });
        printAnswer(
          o,
          res,
          () => `${res.repo_id} created, ${res.visibility}, replicas ${res.replicas.join(' ')} (write quorum ${res.write_quorum})\n`,
        );
      }),
    );
  addClientOptions(
    repo
      .command('list')
      .description('list the repositories you may read, sorted by id')
      .addHelpText(
        'after',
        examples(
          'git-replication repo list',
          'git-replication repo list --limit 50 --cursor acme/site',
          "git-replication repo list --all --json | jq -r '.repos[]'",
        ),
      ),
  )
    .option('--limit <n>', 'repositories per page (1-1000)', parseLimitArg)
    .option('--cursor <cursor>', "start after this repository, or where a previous page's next_cursor says", parseCursorArg)
    .option('--all', 'follow next_cursor through every page')
    .option('--json', 'print the JSON answer (with --all: every page as one answer)')
    .action(async (o: Options & { limit?: number; cursor?: string; all?: boolean }) =>
      withApi(o, async (api) => {
        const res = await listRepos(api, o.limit, o.cursor ?? null, o.all === true);
        printAnswer(o, res, () => res.repos.map((r) => `${r}\n`).join(''));
        if (!o.json && res.next_cursor !== null) process.stderr.write(`more: --cursor ${res.next_cursor} (or --all)\n`);
      }),
    );
  addClientOptions(
    repo
      .command('show')
      .description('show a repository: visibility, generation, replicas')
      .addHelpText('after', examples('git-replication repo show acme/site', 'git-replication repo show acme/site --json | jq .replicas'))
      .addArgument(repoArg()),
  )
    .option('--json', 'print the JSON answer')
    .action(async (id: string, o: Options) =>
      withApi(o, async (api) => {
        const res = await api.get<RepoView>(repoPath(id));
        printAnswer(o, res, () =>
          [
            `${res.repo_id}\t${res.visibility}\tgeneration ${res.generation}\twrite quorum ${res.write_quorum}\n`,
            ...res.replicas.map((r) => `  ${r.node}\t${r.state}\t${r.live ? 'live' : 'down'}\tgeneration ${r.generation ?? '-'}\n`),
          ].join(''),
        );
      }),
    );
  addClientOptions(
    repo
      .command('delete')
      .description('delete a repository from every replica')
      .addHelpText('after', examples('git-replication repo delete acme/old-site'))
      .addArgument(repoArg()),
  )
    .option('--json', 'print the JSON answer')
    .action(async (id: string, o: Options) =>
      withApi(o, async (api) => {
        const res = await api.delete<{ repo_id: string }>(repoPath(id));
        printAnswer(o, res, () => `${res.repo_id} deleted\n`);
      }),
    );
}

/** listRepos reads one page, or with `all` every page from `cursor` on, as one answer. */
export async function listRepos(api: ApiClient, limit: number | undefined, cursor: string | null, all: boolean): Promise<RepoPage> {
  const repos: string[] = [];
  for (;;) {
    const q = new URLSearchParams();
    if (limit !== undefined) q.set('limit', String(limit));
    if (cursor !== null) q.set('cursor', cursor);
    const query = q.toString();
    const page = await api.get<RepoPage>(query ? `/repos?${query}` : '/repos');
    repos.push(...page.repos);
    // A cursor that does not move would loop forever: stop rather than trust it.
    if (!all || page.next_cursor === null || page.next_cursor === cursor)
      return { repos, count: repos.length, next_cursor: all ? null : page.next_cursor };
    cursor = page.next_cursor;
  }
}

function registerRepoAccess(repo: Command): void {
  addClientOptions(
    repo
      .command('visibility')
      .description('make a repository public (anyone reads) or private')
      .addHelpText(
        'after',
        examples('git-replication repo visibility acme/site public', 'git-replication repo visibility acme/site private'),
      )
      .addArgument(repoArg())
      .addArgument(new Argument('<visibility>').choices(['public', 'private'])),
  )
    .option('--json', 'print the JSON answer')
    .action(async (id: string, visibility: string, o: Options) =>
      withApi(o, async (api) => {
        const res = await api.patch<{ repo_id: string; visibility: string }>(repoPath(id), { visibility });
        printAnswer(o, res, () => `${res.repo_id} is ${res.visibility}\n`);
      }),
    );
  addClientOptions(
    repo
      .command('grant')
      .description('give a user or organisation a role on a repository')
      .addHelpText(
        'after',
        examples('git-replication repo grant acme/site user:bob write', 'git-replication repo grant acme/site org:design read'),
      )
      .addArgument(repoArg())
      .addArgument(granteeArg())
      .addArgument(new Argument('<role>').choices(ROLES)),
  )
    .option('--json', 'print the JSON answer')
    .action(async (id: string, grantee: string, role: string, o: Options) =>
      withApi(o, async (api) => {
        const res = await api.put<{ repo_id: string; grantee: string; role: string }>(
          `${repoPath(id)}/grants/${encodeURIComponent(grantee)}`,
          { role },
        );
        printAnswer(o, res, () => `${res.grantee} has ${res.role} on ${res.repo_id}\n`);
      }),
    );
  addClientOptions(
    repo
      .command('revoke')
      .description("remove a user's or organisation's grant")
      .addHelpText('after', examples('git-replication repo revoke acme/site user:bob', 'git-replication repo revoke acme/site org:design'))
      .addArgument(repoArg())
      .addArgument(granteeArg()),
  )
    .option('--json', 'print the JSON answer')
    .action(async (id: string, grantee: string, o: Options) =>
      withApi(o, async (api) => {
        const res = await api.delete<{ repo_id: string; grantee: string }>(`${repoPath(id)}/grants/${encodeURIComponent(grantee)}`);
        printAnswer(o, res, () => `${res.grantee} has no grant on ${res.repo_id}\n`);
      }),
    );
  addClientOptions(
    repo
      .command('grants')
      .description("list a repository's owner, visibility and grants")
      .addHelpText('after', examples('git-replication repo grants acme/site', 'git-replication repo grants acme/site --json'))
      .addArgument(repoArg()),
  )
    .option('--json', 'print the JSON answer')
    .action(async (id: string, o: Options) =>
      withApi(o, async (api) => {
        const res = await api.get<Grants>(`${repoPath(id)}/grants`);
        printAnswer(o, res, () =>
          [
            `${res.repo_id}\towner ${res.owner}\t${res.visibility}\n`,
            ...(res.grants.length === 0 ? ['  no grants\n'] : res.grants.map((g) => `  ${g.grantee}\t${g.role}\n`)),
          ].join(''),
        );
      }),
    );
}
