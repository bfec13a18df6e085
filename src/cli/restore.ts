import { readFile, stat } from 'node:fs/promises';
import { resolve } from 'node:path';
import type { Command } from 'commander';
import { replicaChecksum } from '../domain/checksum.js';
import { errorMessage } from '../domain/errors.js';
import { repoPath, type JsonOption } from './args.js';
import { forEachLimit, parseParallel } from './backup.js';
import { runGit } from './git-client.js';
import { addClientOptions, CliError, resolveToken, withApi, type ApiClient, type ClientOptions } from './http-client.js';
import { layout, readManifest, readMirror, refCount, type BackupEntry } from './manifest.js';
import { restoreLfs, type LfsCopied } from './lfs-backup.js';
import { listRepos } from './repos.js';
import { examples } from './help.js';

/** DEFAULT_HEAD is where a new repository's HEAD points until a push or PATCH moves it. */
const DEFAULT_HEAD = 'refs/heads/main';
const BRANCH = 'refs/heads/';

interface RestoredView {
  generation: number;
  checksum: string;
  default_branch?: string | null;
}

/** RestoreOutcome is one repository's line of a restore. */
export type RestoreOutcome =
  | { id: string; status: 'ok'; generation: number; refs: number; head: string | null; head_now: string | null; lfs: LfsCopied }
  | { id: string; status: 'failed'; error: string };

interface RestoreContext {
  readonly api: ApiClient;
  readonly token: string | null;
  readonly base: string;
  readonly dir: string;
  readonly force: boolean;
  /** grants are the backup's grants (records.json) by repository: restoreRepo writes them again after a create cleared them. */
  readonly grants: ReadonlyMap<string, ReadonlyArray<{ repo: string; grantee: string; role: string }>>;
  /** publicRepos are the repositories records.json says are public (a repository is restored public only if its manifest entry says so too). */
  readonly publicRepos: ReadonlySet<string>;
}

type Options = ClientOptions & JsonOption & { force?: boolean; parallel: number };

/** registerRestore adds `git-replication restore DIR`. */
export function registerRestore(program: Command): void {
  addClientOptions(
    program
      .command('restore')
      .description(
        'restore a backup (git-replication backup) into an empty cluster: users, grants and token records, then every repository',
      )
      .argument('<dir>', 'the backup directory')
      .addHelpText(
        'after',
        examples(
          'git-replication restore /backup/git --url http://127.0.0.1:3001',
          'git-replication restore /backup/git --force --parallel 8',
        ),
      ),
  )
    .option(
      '--force',
      'restore into a cluster that has users or repositories already (records are merged, existing repositories overwritten)',
    )
    .option('--parallel <n>', 'repositories restored at a time (1-32)', parseParallel, 4)
    .option('--json', 'print one JSON summary instead of lines')
    .action(async (dir: string, o: Options) =>
      withApi(o, async (api) => {
        const started = Date.now();
        const base = o.url.replace(/\/+$/, '');
        const { imported, outcomes } = await runRestore(
          { api, token: await resolveToken(o), base, dir: resolve(dir), force: o.force === true },
          o.parallel,
          o.json ? undefined : printOutcome,
        );
        report(o, base, imported, outcomes, Date.now() - started);
      }),
    );
}

/**
 * runRestore checks the cluster is empty (unless --force), imports the directory records, then
 * for each repository of the manifest: checks the mirror still holds what the manifest says,
 * creates the repository, pushes the mirror (`push --mirror`, replicated like any push), points
 * HEAD at the backup's branch (PATCH default_branch) and compares the cluster's checksum with the
 * mirror's.
 */
async function runRestore(
  given: Omit<RestoreContext, 'grants' | 'publicRepos'>,
  parallel: number,
  onEach?: (o: RestoreOutcome) => void,
): Promise<{ imported: Record<string, number>; outcomes: RestoreOutcome[] }> {
  const manifest = await readManifest(given.dir, true);
  const records = await readRecords(given.dir);
  const ctx: RestoreContext = { ...given, grants: grantsByRepo(records), publicRepos: publicIn(records) };
  const existing = await listRepos(ctx.api, 1, null, false);
  if (existing.count > 0 && !ctx.force)
    throw new CliError(
      `the cluster at ${ctx.base} has repositories already (${existing.repos.join(', ')}, …): restore into an empty cluster, or use --force`,
    );
  const answer = await ctx.api
    .post<{ imported: Record<string, number> }>(`/admin/import${ctx.force ? '?merge=true' : ''}`, records)
    .catch((err: unknown) => {
      if (err instanceof CliError && err.status === 409) throw new CliError(`${err.message} (restore --force merges)`, 409, { cause: err });
      throw err;
    });
  const outcomes = await forEachLimit(manifest?.repos ?? [], parallel, async (entry) => {
    const outcome = await restoreRepo(ctx, entry).catch((err: unknown): RestoreOutcome => ({
      id: entry.id,
      status: 'failed',
      error: errorMessage(err),
    }));
    onEach?.(outcome);
    return outcome;
  });
  return { imported: answer.imported, outcomes };
}

/** grantsByRepo groups the grants of records.json by repository. */
function grantsByRepo(records: unknown): Map<string, Array<{ repo: string; grantee: string; role: string }>> {
  const out = new Map<string, Array<{ repo: string; grantee: string; role: string }>>();
  const grants = (records as { grants?: unknown } | null)?.grants;
  for (const g of Array.isArray(grants) ? (grants as Array<{ repo: string; grantee: string; role: string }>) : []) {
    out.set(g.repo, [...(out.get(g.repo) ?? []), g]);
  }
  return out;
}

/** publicIn lists the repositories records.json names public. */
function publicIn(records: unknown): Set<string> {
  const visibility = (records as { visibility?: unknown } | null)?.visibility;
  const list = Array.isArray(visibility) ? (visibility as Array<{ repo: string; visibility: string }>) : [];
  return new Set(list.filter((v) => v.visibility === 'public').map((v) => v.repo));
}

async function readRecords(dir: string): Promise<unknown> {
  try {
    return JSON.parse(await readFile(layout.records(dir), 'utf8')) as unknown;
  } catch (err) {
    throw new CliError(`cannot read ${layout.records(dir)}: ${errorMessage(err)}`, null, { cause: err });
  }
}

/** restoreRepo restores one repository and verifies the cluster's checksum against the mirror's. */
async function restoreRepo(ctx: RestoreContext, entry: BackupEntry): Promise<RestoreOutcome> {
  const path = layout.mirror(ctx.dir, entry.id);
  if (
    !(await stat(path).then(
      (s) => s.isDirectory(),
      () => false,
    ))
  )
    throw new CliError(`no mirror at ${path}`);
  const mirror = await readMirror(path);
  // A backup interrupted after a fetch leaves a mirror ahead of its entry: not a committed state.
  if (replicaChecksum(mirror.refs, mirror.head) !== entry.checksum)
    throw new CliError(
      `the mirror does not hold generation ${entry.generation} as the manifest says (an interrupted backup?): run backup again`,
    );
  // Public only if both say so: records.json is read at the start of a backup run, the entry
  // when its repository is (or in an earlier run, kept when this one failed for it).
  const visibility = ctx.publicRepos.has(entry.id) && entry.visibility === 'public' ? 'public' : 'private';
  const created = await ctx.api.post('/repos', { repo_id: entry.id, visibility }).then(
    () => true,
    (err: unknown) => {
      if (!(ctx.force && err instanceof CliError && err.status === 409)) throw err;
      return false;
    },
  );
  // A new repository starts with no grants (a create clears what the import wrote under its
  // name): the records' grants of it are imported again, as they were the first time.
  const grants = ctx.grants.get(entry.id) ?? [];
  if (created && grants.length > 0) await ctx.api.post('/admin/import?merge=true', { users: [], grants });
  if (mirror.refs.length > 0)
    await runGit(['push', '--mirror', '--quiet', '--', `${ctx.base}/${entry.id}.git`], { cwd: path, token: ctx.token });
  const asBackedUp = replicaChecksum(mirror.refs, mirror.head);
  let view = await ctx.api.get<RestoredView>(repoPath(entry.id));
  // A mirror push does not carry HEAD: point it where the backup's pointed, if that branch exists.
  if (view.checksum !== asBackedUp && mirror.head?.startsWith(BRANCH) && mirror.refs.some((r) => r.name === mirror.head)) {
    await ctx.api.patch(repoPath(entry.id), { default_branch: mirror.head.slice(BRANCH.length) });
    view = await ctx.api.get<RestoredView>(repoPath(entry.id));
  }
  const head = view.default_branch ? `${BRANCH}${view.default_branch}` : DEFAULT_HEAD;
  // Otherwise (a HEAD naming no branch of the backup) the refs must still match, under the new HEAD.
  if (view.checksum !== asBackedUp && view.checksum !== replicaChecksum(mirror.refs, head)) {
    throw new CliError(`checksum after the push (${view.checksum.slice(0, 12)}) differs from the backup's (${asBackedUp.slice(0, 12)})`);
  }
  // The Git LFS objects last: each upload is answered once W replicas hold it.
  const lfs = await restoreLfs(ctx.base, ctx.token, ctx.dir, entry.id, entry.incarnation);
  return {
    id: entry.id,
    status: 'ok',
    lfs,
    generation: view.generation,
    refs: mirror.refs.length,
    head: mirror.head,
    head_now: view.checksum === asBackedUp ? mirror.head : head,
  };
}

function printOutcome(o: RestoreOutcome): void {
  if (o.status === 'failed') process.stdout.write(`failed ${o.id}: ${o.error}\n`);
  else {
    const head = o.head_now !== o.head ? `; HEAD is ${o.head_now ?? 'detached'}, the backup's was ${o.head ?? 'detached'}` : '';
    const lfs = o.lfs.objects > 0 ? `, ${o.lfs.objects} LFS objects` : '';
    process.stdout.write(`restored ${o.id} at generation ${o.generation} (${refCount(o.refs)}${lfs})${head}\n`);
  }
}

/** report prints the summary line (or, with --json, everything) and sets exit code 1 if a repository failed. */
function report(o: JsonOption, url: string, imported: Record<string, number>, outcomes: RestoreOutcome[], ms: number): void {
  const failed = outcomes.filter((x) => x.status === 'failed').length;
  const summary = {
    url,
    repos: outcomes.length,
    restored: outcomes.length - failed,
    failed,
    head_differs: outcomes.filter((x) => x.status === 'ok' && x.head_now !== x.head).length,
    imported,
    seconds: Math.round(ms / 100) / 10,
  };
  if (o.json) process.stdout.write(`${JSON.stringify({ ...summary, outcomes }, null, 2)}\n`);
  else {
    const records = Object.entries(imported)
      .map(([k, n]) => `${n} ${k.replace('_', ' ')}`)
      .join(', ');
    process.stdout.write(
      `restore of ${summary.repos} repos into ${url}: ${summary.restored} restored, ${failed} failed; records: ${records} (${summary.seconds} s)\n`,
    );
  }
  if (failed > 0) process.exitCode = 1;
}
