import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { cRelayUsable, HookServer, parseCommand, perlRelayUsable, refKey, relayHooksDir } from './proc-receive.js';

const A = 'a'.repeat(40);
const B = 'b'.repeat(40);

describe('parseCommand (proc-receive command lines are bytes)', () => {
  it('reads a plain command', () => {
    const c = parseCommand(Buffer.from(`${A} ${B} refs/heads/main`));
    expect(c).toMatchObject({ oldOid: A, newOid: B, ref: 'refs/heads/main', utf8: true, key: refKey('refs/heads/main') });
  });
  it('keeps everything after the second space as the name (never drops trailing words)', () => {
    const c = parseCommand(Buffer.from(`${A} ${B} refs/heads/main trailing-words`));
    expect(c.ref).toBe('refs/heads/main trailing-words');
  });
  it('keeps non-UTF-8 names as bytes, flagged, with a key apart from the name they decode to', () => {
    const raw = Buffer.concat([Buffer.from(`${A} ${B} refs/heads/caf`), Buffer.from([0xe9])]);
    const c = parseCommand(raw);
    expect(c.utf8).toBe(false);
    expect(c.raw.equals(Buffer.concat([Buffer.from('refs/heads/caf'), Buffer.from([0xe9])]))).toBe(true);
    const lookalike = parseCommand(Buffer.from(`${A} ${B} refs/heads/caf\uFFFD`));
    expect(lookalike.utf8).toBe(true);
    expect(lookalike.ref).toBe(c.ref);
    expect(lookalike.key).not.toBe(c.key);
  });
  it.each([`${A} ${B}`, `${A} ${B} `, `${A}`, `zz ${B} refs/heads/x`, `${A} ${B.slice(1)} refs/heads/x`])('refuses %j', (line) => {
    expect(() => parseCommand(Buffer.from(line))).toThrow(/bad command/);
  });
});

describe('HookServer progress connections', () => {
  it('ends a progress connection that comes after the exchange reported (the hook must not wait for ever)', async () => {
    const { HookServer } = await import('./proc-receive.js');
    const { connect } = await import('node:net');
    const { encodePktLine, FLUSH } = await import('./pkt-line.js');
    const server = new HookServer(() => undefined);
    const port = await server.listen();
    let reported!: () => void;
    const done = new Promise<void>((r) => {
      reported = r;
    });
    const unregister = server.expect('push-1', async (exchange) => {
      const req = await exchange.read();
      exchange.report(req.commands, () => ({ ok: false, reason: 'refused early' }));
      reported();
    });
    const main = connect(port, '127.0.0.1');
    main.on('error', () => undefined);
    main.write(
      Buffer.concat([Buffer.from('push-1\n'), encodePktLine('version=1\0\n'), FLUSH, encodePktLine(`${A} ${B} refs/heads/x\n`), FLUSH]),
    );
    await done;
    const progress = connect(port, '127.0.0.1');
    const ended = new Promise<string>((resolve) => {
      progress.on('end', () => resolve('end'));
      progress.on('close', () => resolve('close'));
      progress.on('error', () => resolve('error'));
    });
    progress.write('push-1 progress\n');
    expect(await Promise.race([ended, new Promise((r) => setTimeout(() => r('still open'), 2_000))])).not.toBe('still open');
    main.destroy();
    progress.destroy();
    unregister();
    await server.close();
  });
});

/** RELAYS are the three proc-receive relays the node can give receive-pack (pickRelay picks one). */
const RELAYS = [
  { name: 'bash', dir: relayHooksDir('bash'), usable: true },
  { name: 'perl', dir: relayHooksDir('perl'), usable: perlRelayUsable() },
  { name: 'c', dir: relayHooksDir('c'), usable: cRelayUsable() },
] as const;

const HAS_CC = spawnSync('sh', ['-c', 'command -v "${CC:-cc}"'], { stdio: 'ignore' }).status === 0;

describe('the relays as built and shipped', () => {
  it.runIf(HAS_CC)('npm run build compiled the C relay from its current source, and it runs (a C compiler is here)', () => {
    expect(cRelayUsable(), 'dist/hooks/c/proc-receive is missing or does not run: run `npm run build`').toBe(true);
    // A rebuild that cannot compile keeps the binary built before (running nodes use it): one
    // older than its source means the last build did not compile it.
    const source = fileURLToPath(new URL('../../helpers/proc-receive-relay.c', import.meta.url));
    const binary = join(relayHooksDir('c'), 'proc-receive');
    expect(statSync(binary).mtimeMs, 'the C relay is older than its source: `npm run build` did not compile it').toBeGreaterThanOrEqual(
      statSync(source).mtimeMs,
    );
  });

  it.runIf(perlRelayUsable())('the Perl relay compiles under strict and warnings, which it does not load (2 ms a push)', () => {
    const file = fileURLToPath(new URL('../../hooks/perl/proc-receive', import.meta.url));
    const r = spawnSync('/usr/bin/perl', ['-Mstrict', '-Mwarnings', '-c', file], { encoding: 'utf8' });
    expect(r.stderr.trim()).toBe(`${file} syntax OK`);
    expect(r.status).toBe(0);
  });
});

describe.each(RELAYS)('the $name proc-receive relay, between a real receive-pack and the HookServer', ({ name, dir, usable }) => {
  // Asynchronous: the HookServer answering the relay runs in this process.
  const sh = (cwd: string, args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ code: number | null; out: string; err: string }> =>
    new Promise((resolve, reject) => {
      // In a process group of its own, killed whole after 30 s: a relay that hangs fails its test
      // and leaves no receive-pack or relay behind.
      const child = spawn('git', args, {
        cwd,
        env: { ...process.env, GIT_CONFIG_NOSYSTEM: '1', GIT_CONFIG_GLOBAL: '/dev/null', ...env },
        detached: true,
      });
      const timer = setTimeout(() => {
        try {
          process.kill(-child.pid!, 'SIGKILL');
        } catch {
          // gone already
        }
      }, 30_000);
      child.on('close', () => clearTimeout(timer));
      let out = '';
      let err = '';
      child.stdout.on('data', (d: Buffer) => (out += d.toString()));
      child.stderr.on('data', (d: Buffer) => (err += d.toString()));
      child.on('error', reject);
      child.on('close', (code) => resolve({ code, out, err }));
    });

  /**
   * withRepos gives a test a listening HookServer, an empty bare repo and a work repo with one
   * commit, and the receive-pack command that runs this relay; it removes them all after.
   */
  const withRepos = async (
    test: (t: { server: HookServer; port: number; work: string; bare: string; receivePack: string }) => Promise<void>,
  ): Promise<void> => {
    const root = mkdtempSync(join(tmpdir(), `relay-${name}-`));
    const server = new HookServer(() => undefined);
    try {
      const port = await server.listen();
      await sh(root, ['init', '-q', '--bare', 'r.git']);
      await sh(root, ['init', '-q', '-b', 'main', 'w']);
      const work = join(root, 'w');
      await sh(work, ['-c', 'user.name=t', '-c', 'user.email=t@x', 'commit', '-q', '--allow-empty', '-m', 'one']);
      const receivePack = `git -c core.hooksPath=${dir} -c receive.procReceiveRefs=refs/ receive-pack`;
      await test({ server, port, work, bare: join(root, 'r.git'), receivePack });
    } finally {
      await server.close();
      rmSync(root, { recursive: true, force: true });
    }
  };

  it.skipIf(!usable)('carries the request, progress lines and the report, for 2,000 refs at once', () =>
    withRepos(async ({ server, port, work, bare, receivePack }) => {
      const refspecs = Array.from({ length: 2_000 }, (_, i) => `main:refs/heads/b${i}`);
      let seen = 0;
      const unregister = server.expect('push-r', async (exchange) => {
        const req = await exchange.read();
        seen = req.commands.length;
        exchange.progress(`relayed ${req.commands.length} commands`);
        exchange.report(req.commands, (c) => (c.ref.endsWith('7') ? { ok: false, reason: 'sevens refused' } : { ok: true }));
      });
      const r = await sh(work, ['push', '--porcelain', `--receive-pack=${receivePack}`, bare, ...refspecs], {
        GIT_REPLICATION_HOOK_PORT: String(port),
        GIT_REPLICATION_PUSH_ID: 'push-r',
      });
      unregister();
      expect(seen).toBe(2_000);
      expect(r.err).toContain('remote: relayed 2000 commands');
      expect(r.out.match(/^\*\trefs\/heads\/\S+\t\[new branch\]$/gm)).toHaveLength(1_800);
      expect(r.out.match(/^!\t\S+\t\[remote rejected\] \(sevens refused\)$/gm)).toHaveLength(200);
      expect(r.code).toBe(1);
    }),
  );

  it.skipIf(!usable)('carries a progress line sent as soon as the commands are read (the progress connection comes first)', () =>
    withRepos(async ({ server, port, work, bare, receivePack }) => {
      // With the progress connection made second, the line was lost in about one push of five.
      for (let i = 0; i < 8; i++) {
        await sh(work, ['-c', 'user.name=t', '-c', 'user.email=t@x', 'commit', '-q', '--allow-empty', '-m', `c${i}`]);
        const id = `push-p${i}`;
        const unregister = server.expect(id, async (exchange) => {
          const req = await exchange.read();
          exchange.progress(`early line ${i}`);
          exchange.report(req.commands, () => ({ ok: false, reason: 'refused after the line' }));
        });
        const r = await sh(work, ['push', `--receive-pack=${receivePack}`, bare, `main:refs/heads/b${i}`], {
          GIT_REPLICATION_HOOK_PORT: String(port),
          GIT_REPLICATION_PUSH_ID: id,
        });
        unregister();
        expect(r.err, `push ${i}`).toContain(`remote: early line ${i}`);
        expect(r.err).toContain('refused after the line');
      }
    }),
  );

  it.skipIf(!usable)(
    'ends when the node drops the push, and when no node listens: the push fails, nothing hangs',
    { timeout: 30_000 },
    () =>
      withRepos(async ({ server, port, work, bare, receivePack }) => {
        const push = (env: Record<string, string>): ReturnType<typeof sh> =>
          sh(work, ['push', '--porcelain', `--receive-pack=${receivePack}`, bare, 'main'], env);
        const started = Date.now();
        // A push the node drops (outcome unknown): the node also kills receive-pack (the routes'
        // abandon), but the C and Perl relays end it by themselves, closing receive-pack's reading end.
        if (name !== 'bash') {
          const unregister = server.expect('push-d', async (exchange) => {
            await exchange.read();
            exchange.abandon();
          });
          const dropped = await push({ GIT_REPLICATION_HOOK_PORT: String(port), GIT_REPLICATION_PUSH_ID: 'push-d' });
          unregister();
          expect(dropped.code).not.toBe(0);
          expect(dropped.out).toMatch(/^!\trefs\/heads\/main:refs\/heads\/main\t/m);
        }
        await server.close();
        // The port is closed now: the relay cannot connect, and exits at once.
        const unheard = await push({ GIT_REPLICATION_HOOK_PORT: String(port), GIT_REPLICATION_PUSH_ID: 'push-u' });
        expect(unheard.code).not.toBe(0);
        expect(unheard.out).toMatch(/^!\trefs\/heads\/main:refs\/heads\/main\t/m);
        const missing = await push({ GIT_REPLICATION_PUSH_ID: 'push-m' });
        expect(missing.code).not.toBe(0);
        expect(missing.err).toContain('GIT_REPLICATION_HOOK_PORT');
        // A value that is no port: refused as such (bash's /dev/tcp fails in its own words).
        for (const value of ['70000', '+80', ' 80']) {
          const bad = await push({ GIT_REPLICATION_HOOK_PORT: value, GIT_REPLICATION_PUSH_ID: 'push-b' });
          expect(bad.code, value).not.toBe(0);
          if (name !== 'bash') expect(bad.err).toContain(`GIT_REPLICATION_HOOK_PORT is not a port number (1-65535): ${value}`);
        }
        expect(Date.now() - started).toBeLessThan(20_000);
        expect((await sh(bare, ['for-each-ref'])).out).toBe('');
      }),
  );
});
