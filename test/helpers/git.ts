import { execFile, spawn } from 'node:child_process';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** GIT_ENV is a clean client environment: no system or user config, a fixed identity. */
export const GIT_ENV: NodeJS.ProcessEnv = {
  PATH: process.env.PATH,
  HOME: tmpdir(),
  GIT_CONFIG_NOSYSTEM: '1',
  GIT_CONFIG_GLOBAL: '/dev/null',
  GIT_TERMINAL_PROMPT: '0',
  GIT_AUTHOR_NAME: 'Test',
  GIT_AUTHOR_EMAIL: 'test@example.com',
  GIT_COMMITTER_NAME: 'Test',
  GIT_COMMITTER_EMAIL: 'test@example.com',
  LC_ALL: 'C',
};

/** GitRun is a finished client git command. */
export interface GitRun {
  code: number;
  stdout: string;
  stderr: string;
}

/** git runs the real git client and never throws; callers assert on the result. */
export function git(
  args: string[],
  opts: { cwd?: string; env?: NodeJS.ProcessEnv; input?: string; timeoutMs?: number } = {},
): Promise<GitRun> {
  return new Promise((resolve) => {
    const child = execFile(
      'git',
      args,
      { cwd: opts.cwd, env: { ...GIT_ENV, ...opts.env }, maxBuffer: 256 * 1024 * 1024, timeout: opts.timeoutMs ?? 120_000 },
      (err, stdout, stderr) => {
        const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 1) : 0;
        resolve({ code, stdout, stderr });
      },
    );
    if (opts.input !== undefined) child.stdin?.end(opts.input);
  });
}

/** gitOk runs git and throws with its stderr when it fails. */
export async function gitOk(args: string[], opts: Parameters<typeof git>[1] = {}): Promise<string> {
  const r = await git(args, opts);
  if (r.code !== 0) throw new Error(`git ${args.join(' ')} failed (${r.code}): ${r.stderr}`);
  return r.stdout;
}

/** tempDir makes a fresh temporary directory. */
export function tempDir(prefix = 'gitrep-'): Promise<string> {
  return mkdtemp(join(tmpdir(), prefix));
}

/** workRepo makes a non-bare repo with one commit on main, cloned from nothing. */
export async function workRepo(): Promise<string> {
  const dir = await tempDir('gitrep-work-');
  await gitOk(['init', '-q', '-b', 'main', dir]);
  await commitFile(dir, 'README.md', 'hello\n', 'initial');
  return dir;
}

/** commitFile writes a file and commits it; returns the new commit id. */
export async function commitFile(dir: string, name: string, content: string, message: string): Promise<string> {
  await writeFile(join(dir, name), content);
  await gitOk(['add', name], { cwd: dir });
  await gitOk(['commit', '-q', '-m', message], { cwd: dir });
  return (await gitOk(['rev-parse', 'HEAD'], { cwd: dir })).trim();
}

/** refsOf lists `<oid> <ref>` lines of a repo (bare or not), sorted. */
export async function refsOf(dir: string): Promise<string> {
  return gitOk(['for-each-ref', '--format=%(objectname) %(refname)'], { cwd: dir });
}

/** lsRemote lists the refs a server advertises. */
export async function lsRemote(url: string): Promise<string> {
  return gitOk(['ls-remote', url]);
}

/** gitProcesses lists running git processes whose command line mentions `needle`. */
export async function gitProcesses(needle: string): Promise<string[]> {
  return new Promise((resolve) => {
    const ps = spawn('ps', ['-eo', 'pid,stat,args'], { stdio: ['ignore', 'pipe', 'ignore'] });
    let out = '';
    ps.stdout.on('data', (d: Buffer) => {
      out += d.toString();
    });
    ps.on('close', () => resolve(out.split('\n').filter((l) => l.includes('git') && l.includes(needle) && !l.includes('ps -eo'))));
  });
}

/** nodeGitProcesses lists live processes started by the node whose data dir is `dataDir` (by the runner's marker); its kept update-ref processes only with `refSessions`. */
export async function nodeGitProcesses(
  dataDir: string,
  opts: { refSessions?: boolean } = {},
): Promise<Array<{ pid: number; state: string; cmd: string }>> {
  const { readdir, readFile, realpath } = await import('node:fs/promises');
  const owner = `GIT_REPLICATION_OWNER=${await realpath(dataDir)}`;
  const out: Array<{ pid: number; state: string; cmd: string }> = [];
  for (const p of await readdir('/proc')) {
    if (!/^\d+$/.test(p)) continue;
    const env = (await readFile(`/proc/${p}/environ`, 'latin1').catch(() => '')).split('\0');
    if (!env.includes(owner)) continue;
    // The update-ref processes a node keeps for a replica's next transaction (src/git/update-ref.ts) are not left behind.
    if (!opts.refSessions && env.includes('GIT_REPLICATION_REF_SESSION=1')) continue;
    const stat = await readFile(`/proc/${p}/stat`, 'utf8').catch(() => '');
    const cmd = (await readFile(`/proc/${p}/cmdline`, 'utf8').catch(() => '')).split('\0').join(' ');
    out.push({ pid: Number(p), state: stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3), cmd });
  }
  return out;
}

/** zombies lists zombie processes on the machine. */
export async function zombies(): Promise<string[]> {
  const { readdir, readFile } = await import('node:fs/promises');
  const out: string[] = [];
  for (const p of await readdir('/proc')) {
    if (!/^\d+$/.test(p)) continue;
    const stat = await readFile(`/proc/${p}/stat`, 'utf8').catch(() => '');
    if (stat && stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z')) out.push(stat);
  }
  return out;
}

/**
 * shallowCloneElsewhere makes the push of a shallow clone taken from another server: a `--depth 1`
 * clone (its `dir`) of a new history whose tip `shallow` has a parent the clone lacks, with a
 * branch `whole` of a history of its own. Pushed together, `shallow` is refused ("shallow update
 * not allowed") and `whole` taken.
 */
export async function shallowCloneElsewhere(): Promise<{ dir: string; shallow: string }> {
  const origin = await workRepo();
  await commitFile(origin, 'p.txt', 'p\n', 'the parent');
  const shallow = await commitFile(origin, 's.txt', 's\n', 'the shallow commit');
  const dir = join(await tempDir(), 'shallow-elsewhere');
  await gitOk(['clone', '-q', '--depth', '1', `file://${origin}`, dir]);
  await gitOk(['checkout', '-q', '--orphan', 'whole'], { cwd: dir });
  await commitFile(dir, 'w.txt', 'w\n', 'a history of its own');
  return { dir, shallow };
}
