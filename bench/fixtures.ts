import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { access, mkdir, readdir, rename, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CLIENT_GIT_ENV, gitOk, lastLines, tempDir } from './util.js';

/** CACHE_DIR keeps generated fixtures between runs: `<os.tmpdir()>/git-replication-bench-cache`. */
export const CACHE_DIR = join(tmpdir(), 'git-replication-bench-cache');
const COMPLETE = 'bench-fixture-complete';

/** defaultBundle is the express repo the full benchmark mirrors: $BENCH_EXPRESS_BUNDLE or ../shared/data/express.bundle. */
export function defaultBundle(): string {
  return (
    process.env.BENCH_EXPRESS_BUNDLE ?? resolve(fileURLToPath(new URL('../../..', import.meta.url)), 'shared', 'data', 'express.bundle')
  );
}

async function exists(path: string): Promise<boolean> {
  return access(path).then(
    () => true,
    () => false,
  );
}

/**
 * cached returns `<CACHE_DIR>/<name>`, building it first with `build(dir)` into a temporary
 * directory that is renamed into place only when complete (so a killed run or a concurrent one
 * never leaves a half-built fixture behind).
 */
async function cached(name: string, build: (dir: string) => Promise<void>): Promise<string> {
  const final = join(CACHE_DIR, name);
  if (await exists(join(final, COMPLETE))) return final;
  await mkdir(CACHE_DIR, { recursive: true });
  const tmp = await tempDir(`${name}.tmp-`, CACHE_DIR);
  try {
    const dir = join(tmp, 'repo.git');
    await build(dir);
    await writeFile(join(dir, COMPLETE), `${new Date().toISOString()}\n`);
    await rm(final, { recursive: true, force: true });
    await rename(dir, final).catch(async (err: unknown) => {
      if (!(await exists(join(final, COMPLETE)))) throw err;
    });
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
  return final;
}

/** fastImport feeds a git fast-import stream (written by `feed`) into the bare repo `dir`. */
async function fastImport(dir: string, feed: (write: (chunk: string | Buffer) => Promise<void>) => Promise<void>): Promise<void> {
  await gitOk(['init', '-q', '--bare', '-b', 'main', dir]);
  const child = spawn('git', ['-c', 'fastimport.unpackLimit=0', 'fast-import', '--quiet'], {
    cwd: dir,
    env: CLIENT_GIT_ENV,
    stdio: ['pipe', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (d: string) => {
    stderr += d;
  });
  const closed = new Promise<number | null>((r) => child.on('close', (code) => r(code)));
  let failed: Error | null = null;
  child.stdin.on('error', (err) => {
    failed = err;
  });
  const write = async (chunk: string | Buffer): Promise<void> => {
    if (failed) throw failed;
    if (child.stdin.write(chunk)) return;
    await new Promise<void>((r) => {
      const done = (): void => {
        child.stdin.off('drain', done);
        child.off('close', done);
        r();
      };
      child.stdin.on('drain', done);
      child.on('close', done);
    });
  };
  try {
    await feed(write);
  } finally {
    child.stdin.end();
  }
  const code = await closed;
  if (code !== 0) throw new Error(`git fast-import failed (${code}): ${lastLines(stderr)}`);
}

function commitHeader(ref: string, mark: number, time: number, message: string, parent: number | null): string {
  const msg = Buffer.from(message);
  return `commit ${ref}\nmark :${mark}\ncommitter Bench <bench@example.com> ${time} +0000\ndata ${msg.length}\n${message}\n${parent ? `from :${parent}\n` : ''}`;
}

/**
 * bigRepo is a bare repo whose one pack holds `sizeMb` MiB of incompressible random blobs
 * (1 MiB each, spread over a few commits on main), generated once with git fast-import.
 */
export async function bigRepo(sizeMb: number): Promise<string> {
  return cached(`big-${sizeMb}mb.git`, async (dir) => {
    const commits = Math.max(1, Math.min(8, Math.floor(sizeMb / 25)));
    await fastImport(dir, async (write) => {
      let mark = 0;
      let parent: number | null = null;
      for (let c = 0; c < commits; c++) {
        const blobs: number[] = [];
        const count = Math.floor(sizeMb / commits) + (c < sizeMb % commits ? 1 : 0);
        for (let b = 0; b < count; b++) {
          blobs.push(++mark);
          await write(`blob\nmark :${mark}\ndata ${1024 * 1024}\n`);
          await write(randomBytes(1024 * 1024));
          await write('\n');
        }
        const m = ++mark;
        await write(commitHeader('refs/heads/main', m, 1_700_000_000 + c, `random blobs ${c}`, parent));
        for (const [i, blob] of blobs.entries()) await write(`M 100644 :${blob} c${c}/blob-${String(i).padStart(3, '0')}.bin\n`);
        await write('\n');
        parent = m;
      }
    });
  });
}

/**
 * miniMirror is a small stand-in for express in --quick mode: 200 commits and 45 refs under
 * refs/heads, refs/tags and refs/pull (so mirror pushes carry the same kinds of refs).
 */
export async function miniMirror(): Promise<string> {
  return cached('mini-mirror.git', async (dir) => {
    await fastImport(dir, async (write) => {
      let mark = 0;
      const commits: number[] = [];
      for (let c = 0; c < 200; c++) {
        const blob = ++mark;
        const body = `line ${c}\n${randomBytes(64).toString('hex')}\n`;
        await write(`blob\nmark :${blob}\ndata ${Buffer.byteLength(body)}\n${body}\n`);
        const m = ++mark;
        await write(commitHeader('refs/heads/main', m, 1_700_000_000 + c, `commit ${c}`, commits.at(-1) ?? null));
        await write(`M 100644 :${blob} src/file-${c % 20}.txt\n\n`);
        commits.push(m);
      }
      const at = (i: number): number => commits[Math.min(commits.length - 1, i)]!;
      for (let i = 0; i < 5; i++) await write(`reset refs/heads/branch-${i}\nfrom :${at(40 * i + 10)}\n\n`);
      for (let i = 0; i < 20; i++) await write(`reset refs/tags/v0.${i}.0\nfrom :${at(10 * i)}\n\n`);
      for (let i = 0; i < 20; i++) await write(`reset refs/pull/${i + 1}/head\nfrom :${at(10 * i + 5)}\n\n`);
    });
  });
}

/** expressMirror is `git clone --mirror` of the express bundle, made once. */
export async function expressMirror(bundle: string): Promise<string> {
  const s = await stat(bundle);
  return cached(`express-${s.size}.git`, async (dir) => {
    await gitOk(['clone', '-q', '--mirror', bundle, dir], { timeoutMs: 600_000 });
  });
}

/** smallHistory makes a bare repo with `commits` small commits on main (for the clone workload). */
export async function smallHistory(dir: string, commits: number): Promise<void> {
  await fastImport(dir, async (write) => {
    let mark = 0;
    let parent: number | null = null;
    for (let c = 0; c < commits; c++) {
      const blob = ++mark;
      const body = `${randomBytes(512).toString('base64')}\n`;
      await write(`blob\nmark :${blob}\ndata ${Buffer.byteLength(body)}\n${body}\n`);
      const m = ++mark;
      await write(commitHeader('refs/heads/main', m, 1_700_000_000 + c, `small ${c}`, parent));
      await write(`M 100644 :${blob} file-${c % 10}.txt\n\n`);
      parent = m;
    }
  });
}

/** RefStats counts a repo's refs and pack bytes, for the report. */
export async function repoStats(dir: string): Promise<{ refs: number; packMb: number }> {
  const refs = (await gitOk(['for-each-ref', '--format=%(refname)'], { cwd: dir })).split('\n').filter(Boolean).length;
  let bytes = 0;
  const packDir = join(dir, 'objects', 'pack');
  for (const f of await readdir(packDir).catch(() => [] as string[])) {
    if (f.endsWith('.pack')) bytes += (await stat(join(packDir, f))).size;
  }
  return { refs, packMb: Math.round(bytes / 104_857.6) / 10 };
}
