import { mkdir, rename, rm, stat } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { randomBytes } from 'node:crypto';
import type { Command } from 'commander';
import { errorMessage } from '../domain/errors.js';
import { repoPath, validated, type JsonOption } from './args.js';
import { runGit } from './git-client.js';
import { addClientOptions, CliError, resolveToken, withApi, type ApiClient, type ClientOptions } from './http-client.js';
import {
  layout,
  MANIFEST_VERSION,
  mirrorState,
  readManifest,
  refCount,
  writePrivate,
  type BackupEntry,
  type MirrorState,
} from './manifest.js';
import { backupLfs, type LfsCopied } from './lfs-backup.js';
import { listRepos } from './repos.js';
import { examples } from './help.js';

/** FETCH_ATTEMPTS bounds the fetches of a repository that keeps moving while it is backed up. */
const FETCH_ATTEMPTS = 10;

interface RepoView {
  repo_id: string;
  incarnation: string;
  generation: number;
  checksum: string;
  visibility: 'public' | 'private';
}
interface Records {
  grants: Array<{ repo: string; grantee: string; role: string }>;
}

/** Outcome is one repository's line of a backup: how its mirror was brought to a committed generation, or why not. */
export type Outcome =
  | {
      id: string;
      status: 'ok';
      how: 'cloned' | 'fetched' | 'unchanged';
      generation: number;
      refs: number;
      fetches: number;
      moved: number;
      /** lfs: the repository's Git LFS objects, and those copied by this run. */
      lfs?: LfsCopied;
    }
  | { id: string; status: 'failed'; error: string }
  | { id: string; status: 'dropped' };

/** BackupContext is what every repository's backup shares. */
interface BackupContext {
  readonly api: ApiClient;
  readonly token: string | null;
  /** base is the node's URL without a trailing slash. */
  readonly base: string;
  readonly out: string;
  readonly grants: Map<string, Array<{ grantee: string; role: string }>>;
}

type Options = ClientOptions & JsonOption & { out: string; parallel: number };

/** parseParallel reads `--parallel`: 1 to 32 repositories at a time. */
export const parseParallel = validated((v) => {
  if (!/^[0-9]{1,2}$/.test(v) || Number(v) < 1 || Number(v) > 32) throw new Error('must be an integer from 1 to 32');
  return Number(v);
});

/** registerBackup adds `git-replication backup --out DIR`. */
export function registerBackup(program: Command): void {
  addClientOptions(
    program
      .command('backup')
      .description(
        'copy every repository (each at a committed generation) and the users, grants and token records into DIR; later runs fetch what changed',
      )
      .addHelpText(
        'after',
        examples('git-replication backup --out /backup/git', 'git-replication backup --out /backup/git --parallel 8 --json'),
      ),
  )
    .requiredOption('--out <dir>', 'the backup directory (made if missing; an earlier backup there is updated)')
    .option('--parallel <n>', 'repositories copied at a time (1-32)', parseParallel, 4)
    .option('--json', 'print one JSON summary instead of lines')
    .action(async (o: Options) =>
      withApi(o, async (api) => {
        const started = Date.now();
        const outcomes = await runBackup(api, await resolveToken(o), o.url, resolve(o.out), o.parallel, o.json ? undefined : printOutcome);
        report(o, resolve(o.out), outcomes, Date.now() - started);
      }),
    );
}

/**
 * runBackup writes a backup of the cluster at `url` into `out`: the store's directory records
 * (records.json), a mirror of each repository at a committed generation (repos/<owner>/<name>.git),
 * and the manifest naming each mirror's generation and checksum (written last, by a rename).
 */
export async function runBackup(
  api: ApiClient,
  token: string | null,
  url: string,
  out: string,
  parallel: number,
  onEach?: (o: Outcome) => void,
): Promise<Outcome[]> {
  const startedAt = new Date().toISOString();
  await mkdir(out, { recursive: true, mode: 0o700 }).catch((err: unknown) => {
    throw new CliError(`cannot make ${out}: ${errorMessage(err)}`, null, { cause: err });
  });
  const previous = await readManifest(out);
  const records = await api.get<Records & Record<string, unknown>>('/admin/export');
  await writePrivate(layout.records(out), `${JSON.stringify(records, null, 2)}\n`);
  const ids = (await listRepos(api, 1000, null, true)).repos;
  const ctx: BackupContext = { api, token, base: url.replace(/\/+$/, ''), out, grants: grantsByRepo(records) };
  const prev = new Map((previous?.repos ?? []).map((e) => [e.id, e]));
  const entries = new Map<string, BackupEntry>();
  const outcomes = await forEachLimit(ids, parallel, async (id) => {
    const done = await backupRepo(ctx, id, prev.get(id))
      .then(withLfs(ctx, id))
      .catch((err: unknown) => ({
        outcome: { id, status: 'failed' as const, error: errorMessage(err) },
        entry: prev.get(id) ?? null,
      }));
    if (done.entry) entries.set(id, done.entry);
    onEach?.(done.outcome);
    return done.outcome;
  });
  // A repository deleted since the last backup leaves the manifest (its mirror stays on disk).
  const listed = new Set(ids);
  for (const e of previous?.repos ?? []) {
    if (listed.has(e.id)) continue;
    const gone: Outcome = { id: e.id, status: 'dropped' };
    onEach?.(gone);
    outcomes.push(gone);
  }
  const repos = ids.flatMap((id) => entries.get(id) ?? []);
  await writePrivate(
    layout.manifest(out),
    `${JSON.stringify({ version: MANIFEST_VERSION, source: ctx.base, started_at: startedAt, finished_at: new Date().toISOString(), repos }, null, 2)}\n`,
  );
  await rm(layout.tmp(out), { recursive: true, force: true });
  return outcomes;
}

/**
 * withLfs copies a repository's Git LFS objects after its mirror (backupLfs): the entry and the
 * outcome say how many it holds. A repository dropped meanwhile has none to copy.
 */
function withLfs(
  ctx: BackupContext,
  id: string,
): (done: { outcome: Outcome; entry: BackupEntry | null }) => Promise<{ outcome: Outcome; entry: BackupEntry | null }> {
  return async (done) => {
    if (done.outcome.status !== 'ok' || done.entry === null) return done;
    try {
      const lfs = await backupLfs(ctx.api, ctx.base, ctx.token, ctx.out, id, done.entry.incarnation);
      return { outcome: { ...done.outcome, lfs }, entry: { ...done.entry, lfs_objects: lfs.objects } };
    } catch (err) {
      // The mirror holds the new generation already: the entry says so (the previous one would no
      // longer match it, and the restore would refuse the repository), and the run fails.
      return { outcome: { id, status: 'failed', error: `LFS objects: ${errorMessage(err)}` }, entry: done.entry };
    }
  };
}

function grantsByRepo(records: Records): Map<string, Array<{ grantee: string; role: string }>> {
  const m = new Map<string, Array<{ grantee: string; role: string }>>();
  for (const g of records.grants) m.set(g.repo, [...(m.get(g.repo) ?? []), { grantee: g.grantee, role: g.role }]);
  return m;
}

/**
 * backupRepo brings one mirror to a committed generation: read the store's generation and
 * checksum, clone (first time, or the repository was re-created) or fetch, and compare the
 * mirror's checksum with the store's. A repository pushed to meanwhile no longer matches what
 * was read; if it matches the generation read after the fetch, that one is recorded, else it is
 * fetched again, at most FETCH_ATTEMPTS times. A failure keeps the previous entry: the restore
 * checks each mirror against its entry before using it.
 */
async function backupRepo(
  ctx: BackupContext,
  id: string,
  prev: BackupEntry | undefined,
): Promise<{ outcome: Outcome; entry: BackupEntry | null }> {
  const path = layout.mirror(ctx.out, id);
  let view = await repoView(ctx.api, id);
  if (!view) return { outcome: { id, status: 'dropped' }, entry: null };
  let clone = !(await isDir(path)) || (prev !== undefined && prev.incarnation !== view.incarnation);
  if (!clone) {
    const state = await mirrorState(path);
    if (state.checksum === view.checksum) return done(ctx, view, state, 'unchanged', 0, 0);
  }
  const how = clone ? 'cloned' : 'fetched';
  // moved counts the fetches that found the repository past the generation read before them.
  let moved = 0;
  for (let attempt = 1; attempt <= FETCH_ATTEMPTS; attempt++) {
    if (clone) await cloneMirror(ctx, id, path);
    else await fetchMirror(ctx, id, path);
    clone = false;
    let state = await mirrorState(path);
    if (state.checksum === view.checksum) return done(ctx, view, state, how, attempt, moved);
    const after = await repoView(ctx.api, id);
    if (!after) return { outcome: { id, status: 'dropped' }, entry: null };
    if (after.generation !== view.generation) moved++;
    if (after.checksum === state.checksum && after.incarnation === view.incarnation) return done(ctx, after, state, how, attempt, moved);
    if (after.generation === view.generation && after.incarnation === view.incarnation) {
      // Same generation, other checksum: HEAD moved (a fetch does not follow the remote's HEAD).
      state = await followHead(ctx, id, path);
      if (state.checksum === after.checksum) return done(ctx, after, state, how, attempt, moved);
    }
    if (after.incarnation !== view.incarnation) clone = true;
    view = after;
    await new Promise((r) => setTimeout(r, 50 * attempt + Math.floor(Math.random() * 100)));
  }
  throw new CliError(
    `no fetch matched a committed generation in ${FETCH_ATTEMPTS} attempts (the repository kept moving, or its refs differ from the store's checksum)`,
  );
}

function done(
  ctx: BackupContext,
  view: RepoView,
  state: MirrorState,
  how: 'cloned' | 'fetched' | 'unchanged',
  fetches: number,
  moved: number,
): { outcome: Outcome; entry: BackupEntry } {
  const entry: BackupEntry = {
    id: view.repo_id,
    incarnation: view.incarnation,
    generation: view.generation,
    checksum: view.checksum,
    visibility: view.visibility,
    grants: ctx.grants.get(view.repo_id) ?? [],
    head: state.head,
    refs: state.refs,
    fetched_at: new Date().toISOString(),
  };
  return { outcome: { id: view.repo_id, status: 'ok', how, generation: view.generation, refs: state.refs, fetches, moved }, entry };
}

/** repoView reads a repository's generation and checksum; null if it is gone. */
async function repoView(api: ApiClient, id: string): Promise<RepoView | null> {
  try {
    return await api.get<RepoView>(repoPath(id));
  } catch (err) {
    if (err instanceof CliError && err.status === 404) return null;
    throw err;
  }
}

function gitUrl(ctx: BackupContext, id: string): string {
  return `${ctx.base}/${id}.git`;
}

/** cloneMirror clones into tmp/ and renames into place, so an interrupted clone leaves no half mirror. */
async function cloneMirror(ctx: BackupContext, id: string, path: string): Promise<void> {
  const tmp = join(layout.tmp(ctx.out), `${id.replace('/', '+')}-${randomBytes(4).toString('hex')}.git`);
  await mkdir(layout.tmp(ctx.out), { recursive: true, mode: 0o700 });
  try {
    await runGit(['clone', '--mirror', '--quiet', '--', gitUrl(ctx, id), tmp], { token: ctx.token });
    await mkdir(dirname(path), { recursive: true, mode: 0o700 });
    await rm(path, { recursive: true, force: true });
    await rename(tmp, path);
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
}

/** fetchMirror brings every ref to the remote's, pruning deleted ones, all or none (`--atomic`). */
async function fetchMirror(ctx: BackupContext, id: string, path: string): Promise<void> {
  await runGit(['fetch', '--quiet', '--prune', '--atomic', '--no-write-fetch-head', '--', gitUrl(ctx, id), '+refs/*:refs/*'], {
    cwd: path,
    token: ctx.token,
  });
}

/** followHead points the mirror's HEAD where the remote's points (`ls-remote --symref`). */
async function followHead(ctx: BackupContext, id: string, path: string): Promise<MirrorState> {
  const { stdout } = await runGit(['ls-remote', '--symref', '--', gitUrl(ctx, id), 'HEAD'], { token: ctx.token });
  const m = /^ref: (refs\/\S+)\tHEAD$/m.exec(stdout);
  if (m?.[1]) await runGit(['symbolic-ref', 'HEAD', m[1]], { cwd: path });
  return mirrorState(path);
}

async function isDir(path: string): Promise<boolean> {
  return stat(path).then(
    (s) => s.isDirectory(),
    () => false,
  );
}

/** forEachLimit runs `fn` over `items`, at most `limit` at a time, and returns the results in order. */
export async function forEachLimit<T, R>(items: readonly T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const results: R[] = new Array<R>(items.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const i = next++;
      results[i] = await fn(items[i] as T);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return results;
}

function printOutcome(o: Outcome): void {
  if (o.status === 'ok') {
    const lfs = o.lfs && o.lfs.objects > 0 ? `, ${o.lfs.objects} LFS objects (${o.lfs.copied} copied)` : '';
    process.stdout.write(`backed up ${o.id} at generation ${o.generation} (${refCount(o.refs)}, ${o.how}${lfs})\n`);
  } else if (o.status === 'dropped') process.stdout.write(`dropped ${o.id}: no longer in the cluster (its mirror stays on disk)\n`);
  else process.stdout.write(`failed ${o.id}: ${o.error}\n`);
}

/** report prints the summary line (or, with --json, everything) and sets exit code 1 if a repository failed. */
function report(o: JsonOption, out: string, outcomes: Outcome[], ms: number): void {
  const count = (f: (x: Outcome) => boolean): number => outcomes.filter(f).length;
  const summary = {
    out,
    repos: count((x) => x.status !== 'dropped'),
    cloned: count((x) => x.status === 'ok' && x.how === 'cloned'),
    fetched: count((x) => x.status === 'ok' && x.how === 'fetched'),
    unchanged: count((x) => x.status === 'ok' && x.how === 'unchanged'),
    failed: count((x) => x.status === 'failed'),
    dropped: count((x) => x.status === 'dropped'),
    seconds: Math.round(ms / 100) / 10,
  };
  if (o.json) process.stdout.write(`${JSON.stringify({ ...summary, outcomes }, null, 2)}\n`);
  else
    process.stdout.write(
      `backup of ${summary.repos} repos in ${out}: ${summary.cloned} cloned, ${summary.fetched} fetched, ${summary.unchanged} unchanged, ${summary.failed} failed (${summary.seconds} s)\n`,
    );
  if (summary.failed > 0) process.exitCode = 1;
}
