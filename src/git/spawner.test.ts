import { randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GitRunner, terminate, waitClose } from './runner.js';
import { SpawnHelper } from './spawner.js';

/** SCRIPT is the compiled helper (`npm test` builds dist/ first). */
const SCRIPT = new URL('../../dist/git/spawn-helper.js', import.meta.url);

describe.skipIf(!existsSync(SCRIPT))('GitRunner through the spawn helper', () => {
  let dir: string;
  let helper: SpawnHelper;
  let git: GitRunner;
  const problems: string[] = [];

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'gitrep-spawner-'));
    helper = new SpawnHelper(join(dir, 'spawn.sock'), (m) => problems.push(m), SCRIPT);
    expect(await helper.start()).toBe(true);
    git = new GitRunner({ owner: dir, instance: randomUUID(), maxProcesses: 8, helper });
    await git.run(['init', '-q', '--bare', 'r.git'], { cwd: dir });
  });
  afterAll(async () => {
    await helper.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it('runs git with its input and output, and reports its exit code', async () => {
    expect(helper.usable).toBe(true);
    const oid = (await git.run(['hash-object', '-w', '--stdin'], { cwd: join(dir, 'r.git'), input: 'hello\n' })).stdout.trim();
    expect(oid).toBe('ce013625030ba8dba906f756967f9e9ca394464a');
    expect((await git.run(['cat-file', '-p', oid], { cwd: join(dir, 'r.git') })).stdout).toBe('hello\n');
    await expect(git.run(['cat-file', '-e', '0'.repeat(40)], { cwd: join(dir, 'r.git') })).rejects.toThrow(/exit 1\b/);
    expect((await git.run(['cat-file', '-e', '0'.repeat(40)], { cwd: join(dir, 'r.git'), okCodes: [0, 1] })).code).toBe(1);
  });

  it('runs 40 processes at once, each with its own streams', async () => {
    const runs = await Promise.all(
      Array.from({ length: 40 }, (_, i) => git.run(['hash-object', '--stdin'], { cwd: join(dir, 'r.git'), input: `blob ${i}\n` })),
    );
    const expected = await Promise.all(
      Array.from({ length: 40 }, (_, i) =>
        new GitRunner({ owner: dir, instance: 'direct', maxProcesses: 1 }).run(['hash-object', '--stdin'], {
          cwd: dir,
          input: `blob ${i}\n`,
        }),
      ),
    );
    expect(runs.map((r) => r.stdout)).toEqual(expected.map((r) => r.stdout));
  });

  it('streams 20 MB in and out without loss, and the process is a child of the helper, not of this one', async () => {
    const blob = Buffer.alloc(20 * 1024 * 1024, 'abcdefghij');
    const child = git.spawn(['hash-object', '-w', '--stdin'], { cwd: join(dir, 'r.git') });
    let out = '';
    child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
    await pipeline(Readable.from([blob.subarray(0, 7_000_000), blob.subarray(7_000_000)]), child.stdin!);
    const [code] = await waitClose(child);
    expect(code).toBe(0);
    const cat = git.spawn(['cat-file', 'blob', out.trim()], { cwd: join(dir, 'r.git') });
    child.stdin?.on('error', () => undefined);
    const chunks: Buffer[] = [];
    cat.stdout?.on('data', (d: Buffer) => chunks.push(d));
    cat.stdin?.end();
    await waitClose(cat);
    expect(Buffer.concat(chunks).equals(blob)).toBe(true);
    expect(cat.pid).toBeGreaterThan(0);
  });

  it('a process that exits without reading its input fails the writer instead of stalling it', async () => {
    const child = git.spawn(['cat-file', '-e', 'HEAD'], { cwd: join(dir, 'r.git') });
    const big = Buffer.alloc(8 * 1024 * 1024);
    await expect(pipeline(Readable.from([big, big, big]), child.stdin!)).rejects.toThrow();
    const [code] = await waitClose(child);
    expect(code).not.toBe(0);
  });

  it('kill, terminate and an abort signal end the process', async () => {
    const a = git.spawn(['cat-file', '--batch'], { cwd: join(dir, 'r.git') });
    a.kill('SIGKILL');
    expect((await waitClose(a))[1]).toBe('SIGKILL');
    const b = git.spawn(['cat-file', '--batch'], { cwd: join(dir, 'r.git') });
    await new Promise((r) => setTimeout(r, 50));
    await terminate(b);
    expect(b.signalCode).toBe('SIGKILL');
    const abort = new AbortController();
    const c = git.spawn(['cat-file', '--batch'], { cwd: join(dir, 'r.git'), signal: abort.signal });
    abort.abort();
    expect((await waitClose(c))[1]).toBe('SIGKILL');
    expect(git.runningCount).toBe(0);
  });

  it('a helper that dies is started again; meanwhile git is spawned directly', async () => {
    const before = problems.length;
    // A git process the helper started, still running when it dies, is killed, not left running.
    const running = git.spawn(['cat-file', '--batch'], { cwd: join(dir, 'r.git') });
    await new Promise((r) => running.once('spawn', r));
    const pid = (helper as unknown as { helper: { pid: number } }).helper.pid;
    process.kill(pid, 'SIGKILL');
    await waitClose(running);
    // Gone, or a zombie (its parent, the helper, died, and this sandbox's init does not reap).
    const stat = await readFile(`/proc/${running.pid}/stat`, 'utf8').catch(() => '');
    expect(stat === '' || / Z /.test(stat.slice(stat.lastIndexOf(')')))).toBe(true);
    await new Promise((r) => setTimeout(r, 50));
    expect((await git.run(['rev-parse', '--is-bare-repository'], { cwd: join(dir, 'r.git') })).stdout).toBe('true\n');
    for (let i = 0; i < 50 && !helper.usable; i++) await new Promise((r) => setTimeout(r, 50));
    expect(helper.usable).toBe(true);
    expect(problems.slice(before).join('\n')).toMatch(/spawn helper exited/);
    expect((await git.run(['rev-parse', '--is-bare-repository'], { cwd: join(dir, 'r.git') })).stdout).toBe('true\n');
  });
});
