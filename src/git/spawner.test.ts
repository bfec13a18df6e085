import { randomUUID } from 'node:crypto';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, realpath, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { pipeline } from 'node:stream/promises';
import { connect, createServer, type Socket } from 'node:net';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GitRunner, terminate, waitClose } from './runner.js';
import { C_HELPER, cHelperUsable, pickHelper, PYTHON_HELPER, pythonHelperUsable, SpawnHelper } from './spawner.js';

/** SCRIPT is the compiled Node.js helper (`npm test` builds dist/ first). */
const SCRIPT = new URL('../../dist/git/spawn-helper.js', import.meta.url);

const HAS_CC = spawnSync('sh', ['-c', 'command -v "${CC:-cc}"'], { stdio: 'ignore' }).status === 0;

const helpers = [
  { kind: 'c', script: C_HELPER, usable: cHelperUsable(), needs: 'a C compiler and `npm run build`' },
  { kind: 'node', script: SCRIPT, usable: existsSync(SCRIPT), needs: 'dist/ (npm run build)' },
  { kind: 'python', script: PYTHON_HELPER, usable: pythonHelperUsable(), needs: 'python3' },
] as const;

describe('the C spawn helper as built', () => {
  it.runIf(HAS_CC)('npm run build compiled it from its current source, and a node picks it (a C compiler is here)', () => {
    expect(cHelperUsable(), 'dist/helpers/c/spawn-helper is missing or does not run: run `npm run build`').toBe(true);
    // A rebuild that cannot compile keeps the binary built before: one older than its source means the last build did not compile it.
    const source = fileURLToPath(new URL('../../helpers/spawn-helper.c', import.meta.url));
    expect(statSync(fileURLToPath(C_HELPER)).mtimeMs, 'the C helper is older than its source').toBeGreaterThanOrEqual(
      statSync(source).mtimeMs,
    );
    expect(pickHelper()).toBe('c');
  });

  it.runIf(cHelperUsable())(
    'answers each line it is sent: a request it cannot run as asked is refused, one it cannot read without an id is dropped',
    async () => {
      // Raw lines on the channel, as no node would send them (the node's IPC writes JSON.stringify's).
      const helper = spawn(fileURLToPath(C_HELPER), [join(tmpdir(), `gitrep-none-${randomUUID()}.sock`)], {
        stdio: ['ignore', 'ignore', 'ignore', 'pipe'],
        env: { NODE_CHANNEL_FD: '3' },
      });
      const channel = helper.stdio[3] as Socket;
      let said = '';
      channel.setEncoding('utf8').on('data', (d: string) => (said += d));
      const lines = [
        '{"id":1,"file":"true","args":[],"env":{"A=B":"x"}}',
        '{"id":2,"file":"true","args":[],"env":{"":"x"}}',
        '{"id":3,"file":"true","args":[],"env":{"A":1}}',
        '{"id":4,"file":"true","args":[]}{"id":5,"file":"true"}',
        '{"id":+6,"file":"true","args":[]}',
        '{"id":7,"file":"true","args":["a\\u0000b"],"env":{}}',
        '{"id":',
        '{"id":8,"file":"true","args":[],"env":{"PATH":"/nonexistent"}}',
        // A repeated name counts once, the last (as JSON.parse takes it): true is found, and only the socket is missing.
        '{"id":9,"file":"true","args":[],"env":{"PATH":"/nonexistent","PATH":"/usr/bin:/bin"}}',
      ];
      channel.write(`${lines.join('\n')}\n`);
      for (let i = 0; i < 100 && said.split('\n').length < 8; i++) await new Promise((r) => setTimeout(r, 20));
      helper.kill('SIGKILL');
      const reports = said
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l) as { id: number; error?: string });
      expect(reports.map((r) => r.id)).toEqual([1, 2, 3, 4, 7, 8, 9]);
      expect(reports.map((r) => r.error)).toEqual([
        "spawn true: an environment variable name is empty or holds '='",
        "spawn true: an environment variable name is empty or holds '='",
        "spawn true: an environment variable's value is not a string",
        'spawn true: a request that could not be read',
        'spawn true: an argument, variable or directory holds a NUL byte',
        'spawn true: No such file or directory (not found on PATH)',
        "spawn true: cannot connect to the node's socket: No such file or directory",
      ]);
    },
  );
});

/**
 * inheritedFdReaches runs a node (a child of bash, which left descriptor 200 open, not
 * close-on-exec, as a supervisor might) whose spawn helper starts a shell that says whether it
 * holds descriptor 200.
 */
function inheritedFdReaches(script: URL): string {
  const program = `
    const { SpawnHelper } = await import(process.env.SPAWNER);
    const { waitClose } = await import(process.env.RUNNER);
    const helper = new SpawnHelper(process.env.SOCK, (m) => console.error(m), new URL(process.env.HELPER));
    await helper.start();
    const child = helper.spawn('sh', ['-c', '[ -e /proc/$$/fd/200 ] && echo held || echo closed'], { cwd: '/', env: { PATH: process.env.PATH } });
    child.stdin.end();
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    await waitClose(child);
    await helper.stop();
    process.stdout.write(out);`;
  const dir = mkdtempSync(join(tmpdir(), 'gitrep-fd-'));
  try {
    const r = spawnSync('bash', ['-c', 'exec 200</dev/null; exec "$0" --input-type=module -e "$1"', process.execPath, program], {
      env: {
        PATH: process.env.PATH ?? '/usr/bin:/bin',
        SPAWNER: new URL('../../dist/git/spawner.js', import.meta.url).href,
        RUNNER: new URL('../../dist/git/runner.js', import.meta.url).href,
        SOCK: join(dir, 's.sock'),
        HELPER: script.href,
      },
      encoding: 'utf8',
      timeout: 30_000,
    });
    return `${r.stdout.trim()}${r.status === 0 ? '' : ` (exit ${r.status}: ${r.stderr.slice(-300)})`}`;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

describe('descriptors the node inherited', () => {
  // The Node.js helper cannot mark what it inherited close-on-exec (Node has no fcntl): it is the last fallback.
  for (const { kind, script, usable, needs } of helpers.filter((h) => h.kind !== 'node')) {
    it.runIf(usable && existsSync(new URL('../../dist/git/spawner.js', import.meta.url)))(
      `do not reach a process the ${kind} helper starts${usable ? '' : ` (needs ${needs})`}`,
      () => {
        expect(inheritedFdReaches(script)).toBe('closed');
      },
    );
  }
});

describe.each(helpers)('GitRunner through the $kind spawn helper', ({ kind, script, usable, needs }) => {
  if (!usable) {
    it.skip(`needs ${needs}`, () => undefined);
    return;
  }
  let dir: string;
  let helper: SpawnHelper;
  let git: GitRunner;
  const problems: string[] = [];

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'gitrep-spawner-'));
    helper = new SpawnHelper(join(dir, 'spawn.sock'), (m) => problems.push(m), script);
    expect(await helper.start()).toBe(true);
    expect(helper.kind).toBe(kind);
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

  it("starts the process as the helper's child, in the directory and with the environment asked for", async () => {
    const child = git.spawn(['cat-file', '--batch'], { cwd: join(dir, 'r.git') });
    await new Promise((r) => child.once('spawn', r));
    const stat = await readFile(`/proc/${child.pid}/stat`, 'utf8');
    const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
    expect(ppid).toBe((helper as unknown as { helper: { pid: number } }).helper.pid);
    expect(ppid).not.toBe(process.pid);
    child.kill('SIGKILL');
    await waitClose(child);
    // The working directory and the environment (non-ASCII included) reach git as they were asked for.
    const config = await git.run(['config', '--get', 'user.name'], {
      cwd: join(dir, 'r.git'),
      env: { GIT_CONFIG_COUNT: '1', GIT_CONFIG_KEY_0: 'user.name', GIT_CONFIG_VALUE_0: 'Ünïcode Name' },
    });
    expect(config.stdout).toBe('Ünïcode Name\n');
    expect((await git.run(['rev-parse', '--absolute-git-dir'], { cwd: join(dir, 'r.git') })).stdout).toBe(
      `${await realpath(join(dir, 'r.git'))}\n`,
    );
  });

  it('passes arguments and variables byte for byte, finds the program on the PATH asked for, and starts it with default signal handling', async () => {
    const odd = ['quote " and \\ backslash', 'new\nline\ttab \u0001 control', 'Ünïcode 😀 emoji', '', '-'];
    const bin = join(dir, 'bin');
    await mkdir(bin, { recursive: true });
    // A program only on the PATH given to the process (not on the helper's): it prints its
    // arguments and a variable, then (as grep, by exec) its own signal mask and ignored signals.
    await writeFile(
      join(bin, 'gitrep-args'),
      '#!/bin/sh\nprintf "%s|" "$@"\nprintf "%s|" "$ODD"\nexec grep -E "^Sig(Blk|Ign):" /proc/self/status\n',
      { mode: 0o755 },
    );
    const child = helper.spawn('gitrep-args', odd, { cwd: dir, env: { PATH: `${bin}:/usr/bin:/bin`, ODD: odd.join('#') } });
    child.stdin?.end();
    let out = '';
    child.stdout?.setEncoding('utf8').on('data', (d: string) => (out += d));
    child.stderr?.resume();
    expect(await waitClose(child)).toEqual([0, null]);
    const printed = `${odd.join('|')}|${odd.join('#')}|`;
    expect(out.slice(0, printed.length)).toBe(printed);
    // No signal blocked, and none of the standard ones ignored (the helpers ignore or handle
    // SIGPIPE, SIGINT, SIGTERM and SIGHUP themselves). glibc's posix_spawn, which the C helper
    // uses, leaves its two internal real-time signals (32 and 33) ignored: nothing sends them to git.
    const mask = (name: string): bigint => BigInt(`0x${new RegExp(`${name}:\\s*([0-9a-f]+)$`, 'm').exec(out)?.[1] ?? 'ff'}`);
    expect(mask('SigBlk')).toBe(0n);
    expect(mask('SigIgn') & 0x7fffffffn).toBe(0n);
    // A program on no directory of the PATH given fails the spawn, as does an argument with a NUL byte.
    for (const [file, args, path] of [
      ['gitrep-args', [], '/nonexistent'],
      ['gitrep-args', ['a\u0000b'], bin],
    ] as const) {
      const failing = helper.spawn(file, args, { cwd: dir, env: { PATH: path } });
      const failed = new Promise<Error>((r) => failing.once('error', r));
      const closed = waitClose(failing);
      expect((await failed).message).toMatch(/^spawn: /);
      expect(await closed).toEqual([null, 'SIGKILL']);
    }
    expect((await git.run(['rev-parse', '--is-bare-repository'], { cwd: join(dir, 'r.git') })).stdout).toBe('true\n');
  });

  it('a directory that is not there fails the spawn with an error, and the next spawn works', async () => {
    await expect(git.run(['rev-parse', '--git-dir'], { cwd: join(dir, 'not-there') })).rejects.toThrow();
    expect((await git.run(['rev-parse', '--is-bare-repository'], { cwd: join(dir, 'r.git') })).stdout).toBe('true\n');
    expect(git.runningCount).toBe(0);
  });

  it('spawns that fail while another process runs do not hold up the report of its exit', async () => {
    const a = git.spawn(['cat-file', '--batch'], { cwd: join(dir, 'r.git') });
    await new Promise((r) => a.once('spawn', r));
    for (let i = 0; i < 10; i++) await expect(git.run(['rev-parse'], { cwd: join(dir, `not-there-${i}`) })).rejects.toThrow();
    a.stdin!.end();
    const closed = await Promise.race([
      waitClose(a).then(() => 'closed'),
      new Promise((r) => setTimeout(() => r('no exit reported'), 5_000)),
    ]);
    expect(closed).toBe('closed');
    expect((await git.run(['rev-parse', '--is-bare-repository'], { cwd: join(dir, 'r.git') })).stdout).toBe('true\n');
  });

  it("a writer that gives up (its source failed) ends git's input: git exits instead of waiting for ever", async () => {
    const child = git.spawn(['hash-object', '--stdin'], { cwd: join(dir, 'r.git') });
    await new Promise((r) => child.once('spawn', r));
    async function* failing(): AsyncGenerator<Buffer> {
      yield Buffer.from('part of a blob');
      await new Promise((r) => setTimeout(r, 50));
      throw new Error('the request body was cut');
    }
    await expect(pipeline(Readable.from(failing()), child.stdin!)).rejects.toThrow(/cut/);
    const closed = await Promise.race([
      waitClose(child).then(() => 'closed'),
      new Promise((r) => setTimeout(() => r('still running'), 5_000)),
    ]);
    expect(closed).toBe('closed');
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

  it('a process whose stream sockets never reach the node still closes, its output dropped, and is reported', async () => {
    // The sockets of one spawn are lost (a load run left 818 such processes on one node, exited,
    // their streams never joined, and a repair waiting on one of them for good).
    const lossy = new SpawnHelper(join(dir, 'lossy.sock'), (m) => problems.push(m), script, 300);
    expect(await lossy.start()).toBe(true);
    try {
      const sockets = lossy as unknown as { accept(s: Socket): void };
      const accept = sockets.accept.bind(lossy);
      // Each socket is taken and dropped once its first line (which spawn it is for) came in.
      sockets.accept = (s: Socket) => void s.once('data', () => s.destroy());
      const child = lossy.spawn('git', ['hash-object', '--stdin'], { cwd: dir, env: { PATH: process.env.PATH ?? '' } });
      const errors: unknown[] = [];
      child.on('error', (e) => errors.push(e));
      const fed = pipeline(Readable.from([Buffer.alloc(1024 * 1024)]), child.stdin!).then(
        () => null,
        (e: unknown) => e,
      );
      let out = '';
      child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
      child.stderr!.resume();
      const before = problems.length;
      const [code, signal] = await waitClose(child);
      expect(code !== 0 || signal !== null).toBe(true);
      expect(out).toBe('');
      expect(await fed).toMatchObject({ code: 'EPIPE' });
      expect(errors).toEqual([]);
      expect(problems.slice(before).join('\n')).toMatch(
        /1 git process\(es\) exited with stream sockets that never reached the node \(the last: hash-object/,
      );
      // The next spawn, its sockets accepted again, runs as usual.
      sockets.accept = accept;
      const again = new GitRunner({ owner: dir, instance: randomUUID(), maxProcesses: 1, helper: lossy });
      expect((await again.run(['hash-object', '--stdin'], { cwd: dir, input: 'hello\n' })).stdout.trim()).toBe(
        'ce013625030ba8dba906f756967f9e9ca394464a',
      );
    } finally {
      await lossy.stop();
    }
  });

  it('a process that exits 0 while its output never reached the node fails, and late sockets are turned away', async () => {
    // git wrote its answer into a socket the node never joined: the run must not pass for one
    // that printed nothing (an empty for-each-ref is a repo without refs).
    const lossy = new SpawnHelper(join(dir, 'held.sock'), (m) => problems.push(m), script, 300);
    expect(await lossy.start()).toBe(true);
    try {
      const sockets = lossy as unknown as { accept(s: Socket): void };
      const accept = sockets.accept.bind(lossy);
      const held: Socket[] = [];
      // Accepted, and neither read nor joined: git's writes sit in the socket's buffer.
      sockets.accept = (s: Socket) => void held.push(s);
      const runner = new GitRunner({ owner: dir, instance: randomUUID(), maxProcesses: 1, helper: lossy });
      const before = problems.length;
      const child = lossy.spawn('git', ['rev-parse', '--is-bare-repository'], {
        cwd: join(dir, 'r.git'),
        env: { PATH: process.env.PATH ?? '' },
      });
      const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
      let out = '';
      child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
      child.stderr!.resume();
      expect(await exited).toBe(0);
      expect(await waitClose(child)).toEqual([null, 'SIGPIPE']);
      expect(out).toBe('');
      // The sockets turn up after all: refused, and nothing breaks (the streams ended already).
      for (const s of held.splice(0)) accept(s);
      // So is one handed to the process itself after its stream was given up, with data coming:
      // piped into the ended stream, that data was a write after end (an uncaught error).
      const pair = createServer();
      const sock = join(dir, 'pair.sock');
      const served = new Promise<Socket>((r) => pair.once('connection', r));
      await new Promise<void>((r) => pair.listen(sock, r));
      const writer = connect(sock);
      const late = await served;
      (child as unknown as { attach(fd: number, s: Socket): void }).attach(1, late);
      writer.on('error', () => undefined).write('late output\n');
      await new Promise((r) => setTimeout(r, 100));
      expect(late.destroyed).toBe(true);
      expect(out).toBe('');
      writer.destroy();
      pair.close();
      // Through GitRunner, the same loss is an error, not an empty answer.
      await expect(runner.run(['rev-parse', '--is-bare-repository'], { cwd: join(dir, 'r.git') })).rejects.toThrow(/SIGPIPE/);
      for (const s of held.splice(0)) s.destroy();
      // Both are reported: the first at once, the second when the minute is over (here: at stop).
      expect(problems.slice(before).join('\n')).toMatch(
        /1 git process\(es\) exited with stream sockets that never reached the node \(the last: rev-parse, pid \d+, exit 0, fds 0,1,2;/,
      );
      await lossy.stop();
      expect(problems.slice(before).join('\n')).toMatch(/\n1 git process\(es\) exited .*they count as failed/);
    } finally {
      await lossy.stop();
    }
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
    // Its streams close with the helper; the process itself may take a moment longer to end.
    const ended = async (): Promise<boolean> => {
      const stat = await readFile(`/proc/${running.pid}/stat`, 'utf8').catch(() => '');
      return stat === '' || / Z /.test(stat.slice(stat.lastIndexOf(')')));
    };
    for (let i = 0; i < 100 && !(await ended()); i++) await new Promise((r) => setTimeout(r, 20));
    expect(await ended()).toBe(true);
    await new Promise((r) => setTimeout(r, 50));
    expect((await git.run(['rev-parse', '--is-bare-repository'], { cwd: join(dir, 'r.git') })).stdout).toBe('true\n');
    for (let i = 0; i < 50 && !helper.usable; i++) await new Promise((r) => setTimeout(r, 50));
    expect(helper.usable).toBe(true);
    expect(problems.slice(before).join('\n')).toMatch(/spawn helper exited/);
    expect((await git.run(['rev-parse', '--is-bare-repository'], { cwd: join(dir, 'r.git') })).stdout).toBe('true\n');
  });
});
