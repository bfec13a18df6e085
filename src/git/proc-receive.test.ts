import { describe, expect, it } from 'vitest';
import { parseCommand, refKey } from './proc-receive.js';

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
