import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { isOid, type RefUpdate } from '../domain/ref-name.js';
import { capabilitiesOf, encodePktLine, FLUSH, PktLineReader, type Pkt } from './pkt-line.js';
import { builtBinaryRuns } from './spawner.js';

/**
 * PushCommand is one `<old> <new> <ref>` of a push. Ref names are bytes (git allows names that
 * are not UTF-8): `raw` is exactly what receive-pack sent, and what the report echoes; `ref` is
 * its UTF-8 reading, meaningful only when `utf8` says the bytes round-trip. `key` names the
 * command uniquely (the bytes as latin1), so two names that decode alike never share a result.
 */
export interface PushCommand extends RefUpdate {
  readonly raw: Buffer;
  readonly utf8: boolean;
  readonly key: string;
}

/** RefResult is the node's answer for one command: ok, or ng with a reason git prints. */
export type RefResult = { ok: true } | { ok: false; reason: string };

/** refKey is the key of a ref name given as text (a UTF-8 name: the same key its command has). */
export function refKey(ref: string): string {
  return Buffer.from(ref, 'utf8').toString('latin1');
}

/**
 * parseCommand reads one command line: two object ids and, after the second space, the whole
 * rest as the ref name (a name with a space in it is kept whole, and refused as invalid later).
 */
export function parseCommand(line: Buffer): PushCommand {
  const first = line.indexOf(0x20);
  const second = first === -1 ? -1 : line.indexOf(0x20, first + 1);
  const oldOid = first === -1 ? '' : line.subarray(0, first).toString('latin1');
  const newOid = second === -1 ? '' : line.subarray(first + 1, second).toString('latin1');
  const raw = second === -1 ? Buffer.alloc(0) : Buffer.from(line.subarray(second + 1));
  if (!isOid(oldOid) || !isOid(newOid) || raw.length === 0)
    throw new Error(`bad command from receive-pack: '${line.toString('latin1').slice(0, 200)}'`);
  const ref = raw.toString('utf8');
  return { oldOid, newOid, ref, raw, utf8: Buffer.from(ref, 'utf8').equals(raw), key: raw.toString('latin1') };
}

/** ProcReceiveRequest is what receive-pack handed the proc-receive hook. */
export interface ProcReceiveRequest {
  readonly commands: PushCommand[];
  readonly atomic: boolean;
}

/**
 * ProcReceiveExchange is one push's proc-receive conversation (githooks(5), "proc-receive"):
 * version negotiation, the commands, then the node's per-ref report. The node asks for no push
 * options: nothing here uses them, and a push's options (up to its commands' limit, 32 MiB) would
 * only have been read into the node's memory.
 */
export class ProcReceiveExchange {
  private readonly reader = new PktLineReader();
  private progressSocket: Socket | null = null;
  /** finished: the report (or abandon) went out; a progress connection arriving later is ended at once. */
  private finished = false;
  private waiting: (() => void) | null = null;
  private ended = false;
  private failure: Error | null = null;

  constructor(
    private readonly socket: Socket,
    initial: Buffer,
  ) {
    this.reader.push(initial);
    socket.on('data', (chunk: Buffer) => {
      this.reader.push(chunk);
      this.wake();
    });
    socket.on('end', () => {
      this.ended = true;
      this.wake();
    });
    socket.on('error', (err) => {
      this.failure = err;
      this.wake();
    });
    socket.on('close', () => {
      this.ended = true;
      this.wake();
    });
  }

  private wake(): void {
    const w = this.waiting;
    this.waiting = null;
    w?.();
  }

  private async nextPkt(): Promise<Pkt> {
    for (;;) {
      const pkt = this.reader.read();
      if (pkt) return pkt;
      if (this.failure) throw this.failure;
      if (this.ended) throw new Error('proc-receive hook closed the connection');
      await new Promise<void>((resolve) => {
        this.waiting = resolve;
      });
    }
  }

  private async readUntilFlush(): Promise<Buffer[]> {
    const lines: Buffer[] = [];
    for (;;) {
      const pkt = await this.nextPkt();
      if (pkt.type === 'flush') return lines;
      if (pkt.type !== 'data') throw new Error(`unexpected ${pkt.type} packet from receive-pack`);
      const d = pkt.data;
      lines.push(d.length > 0 && d[d.length - 1] === 0x0a ? d.subarray(0, -1) : d);
    }
  }

  /** read runs the negotiation and returns the push's commands. */
  async read(): Promise<ProcReceiveRequest> {
    const version = await this.readUntilFlush();
    const line = version[0] ?? Buffer.alloc(0);
    const nul = line.indexOf(0);
    const head = (nul === -1 ? line : line.subarray(0, nul)).toString('latin1');
    const caps = capabilitiesOf(line);
    if (head !== 'version=1') throw new Error(`unsupported proc-receive version '${head}'`);
    this.socket.write(Buffer.concat([encodePktLine('version=1\0\n'), FLUSH]));
    const commands = (await this.readUntilFlush()).map(parseCommand);
    return { commands, atomic: caps.includes('atomic') };
  }

  /**
   * report sends one result per command, naming each ref by its exact bytes; receive-pack relays
   * exactly these to the client.
   */
  report(commands: readonly PushCommand[], resultOf: (c: PushCommand) => RefResult): void {
    const parts: Buffer[] = [];
    for (const c of commands) {
      const r = resultOf(c);
      const tail = r.ok ? '\n' : ` ${r.reason.replace(/[\r\n]/g, ' ')}\n`;
      parts.push(encodePktLine(Buffer.concat([Buffer.from(r.ok ? 'ok ' : 'ng '), c.raw, Buffer.from(tail)])));
    }
    parts.push(FLUSH);
    this.finished = true;
    this.socket.end(Buffer.concat(parts));
    this.progressSocket?.end();
  }

  /** abandon drops the exchange without a report. */
  abandon(): void {
    this.finished = true;
    this.socket.destroy();
    this.progressSocket?.destroy();
  }

  /** attachProgress takes the hook's progress connection (its bytes go to git's stderr). */
  attachProgress(socket: Socket): void {
    // The hook waits for its progress relay to end: one that comes after the report must be
    // ended at once, or the hook (and receive-pack, and the push) would wait for ever.
    if (this.progressSocket || this.finished || this.socket.destroyed) {
      socket.on('error', () => undefined);
      socket.end();
      return;
    }
    this.progressSocket = socket;
    socket.on('error', () => undefined);
  }

  /** progress sends a line the pushing user sees as `remote: <line>` (dropped if the hook has no progress connection). */
  progress(line: string): void {
    const s = this.progressSocket;
    if (s && !s.destroyed) s.write(`${line.replace(/[\r\n]/g, ' ')}\n`);
  }
}

/** HOOKS_DIR holds the bash proc-receive relay (`hooks/` at the package's root, from src/git or dist/git alike). */
const HOOKS_DIR = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'hooks');

/** PERL_RELAY_DIR holds the Perl relay: one process per push instead of bash and three `cat`s. */
const PERL_RELAY_DIR = join(HOOKS_DIR, 'perl');

/**
 * C_RELAY_DIR holds the C relay that `npm run build` compiles (scripts/build-c.sh) when a C
 * compiler is there: `dist/hooks/c` at the package's root, whether this module runs from src or dist.
 */
const C_RELAY_DIR = join(HOOKS_DIR, '..', 'dist', 'hooks', 'c');

/** RelayKind names a proc-receive relay: all three speak the same protocol to the HookServer. */
export type RelayKind = 'c' | 'perl' | 'bash';

/** cRelayUsable says whether the compiled C relay is there and runs (`--check`). */
export function cRelayUsable(): boolean {
  return builtBinaryRuns(join(C_RELAY_DIR, 'proc-receive'));
}

/** perlRelayUsable says whether the Perl relay can run here (its `#!/usr/bin/perl` runs). */
export function perlRelayUsable(): boolean {
  if (!existsSync(join(PERL_RELAY_DIR, 'proc-receive'))) return false;
  return spawnSync('/usr/bin/perl', ['-e', '1'], { stdio: 'ignore', timeout: 10_000 }).status === 0;
}

/**
 * pickRelay is the quickest relay that runs here, asked once when a node starts: the C one
 * (about 1 ms from spawn to its connection), else Perl (about 4.5 ms), else bash with three
 * `cat`s (about 6 ms and 7 ms of CPU).
 */
export function pickRelay(): RelayKind {
  if (cRelayUsable()) return 'c';
  return perlRelayUsable() ? 'perl' : 'bash';
}

/** relayHooksDir is the hooks directory receive-pack gets (`core.hooksPath`) for a relay. */
export function relayHooksDir(kind: RelayKind): string {
  return kind === 'c' ? C_RELAY_DIR : kind === 'perl' ? PERL_RELAY_DIR : HOOKS_DIR;
}

/** ProcReceiveHandler handles one push's exchange; it MUST end it with report() or abandon(). */
export type ProcReceiveHandler = (exchange: ProcReceiveExchange) => Promise<void>;

/**
 * HookServer is the loopback socket the bash proc-receive hook relays to. Each push registers a
 * random push id in receive-pack's environment; the hook sends it as its first line.
 */
export class HookServer {
  private readonly server: Server;
  private readonly handlers = new Map<string, ProcReceiveHandler>();
  /** exchanges are the running exchanges by push id, for their progress connections. */
  private readonly exchanges = new Map<string, ProcReceiveExchange>();
  /** earlyProgress holds a progress connection that came before its exchange's. */
  private readonly earlyProgress = new Map<string, Socket>();

  constructor(private readonly onError: (err: unknown) => void) {
    this.server = createServer((socket) => this.accept(socket));
  }

  /** listen starts the server on a free loopback port and returns it. */
  async listen(): Promise<number> {
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(0, '127.0.0.1', () => resolve());
    });
    const addr = this.server.address();
    if (addr === null || typeof addr === 'string') throw new Error('hook server has no port');
    return addr.port;
  }

  /** expect registers the handler for a push id; the returned function unregisters it. */
  expect(pushId: string, handler: ProcReceiveHandler): () => void {
    this.handlers.set(pushId, handler);
    return () => {
      this.handlers.delete(pushId);
      this.exchanges.delete(pushId);
      this.earlyProgress.get(pushId)?.destroy();
      this.earlyProgress.delete(pushId);
    };
  }

  private accept(socket: Socket): void {
    socket.setNoDelay(true);
    let buf = Buffer.alloc(0);
    const onData = (chunk: Buffer): void => {
      buf = Buffer.concat([buf, chunk]);
      const nl = buf.indexOf(10);
      if (nl === -1) {
        if (buf.length > 256) socket.destroy();
        return;
      }
      socket.off('data', onData);
      const line = buf.subarray(0, nl).toString('utf8');
      if (line.endsWith(' progress')) {
        const id = line.slice(0, -' progress'.length);
        const running = this.exchanges.get(id);
        if (running) running.attachProgress(socket);
        else if (this.handlers.has(id) && !this.earlyProgress.has(id)) this.earlyProgress.set(id, socket);
        else socket.destroy();
        return;
      }
      const pushId = line;
      const handler = this.handlers.get(pushId);
      if (!handler) {
        socket.destroy();
        return;
      }
      this.handlers.delete(pushId);
      const exchange = new ProcReceiveExchange(socket, buf.subarray(nl + 1));
      this.exchanges.set(pushId, exchange);
      const early = this.earlyProgress.get(pushId);
      if (early) {
        this.earlyProgress.delete(pushId);
        exchange.attachProgress(early);
      }
      handler(exchange).catch((err: unknown) => {
        exchange.abandon();
        this.onError(err);
      });
    };
    socket.on('data', onData);
    socket.on('error', () => undefined);
  }

  /** close stops accepting connections. */
  async close(): Promise<void> {
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}
