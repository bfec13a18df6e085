import { createServer, type ServerResponse } from 'node:http';
import { connect, type AddressInfo, type Socket } from 'node:net';
import { PassThrough } from 'node:stream';
import { finished } from 'node:stream/promises';
import { describe, expect, it } from 'vitest';
import { chain, watchStalledReader } from './body-guards.js';

describe('chain', () => {
  it('passes an error on to the streams after it', async () => {
    const first = new PassThrough();
    const last = chain(first, new PassThrough(), new PassThrough());
    first.destroy(new Error('client went away'));
    await expect(finished(last)).rejects.toThrow('client went away');
  });

  it('passes on the error of a stream destroyed before the chain was built', async () => {
    const first = new PassThrough();
    first.on('error', () => undefined);
    first.destroy(new Error('body idle'));
    await new Promise((r) => setImmediate(r));
    const last = chain(first, new PassThrough());
    await expect(finished(last)).rejects.toThrow('body idle');
  });
});

describe('watchStalledReader', () => {
  /**
   * answering runs a real HTTP server whose one answer `write` feeds, watched with `idleMs`, and
   * a raw client socket that reads as `reader` says; it resolves with when (ms) the watch called
   * its stall, or null if it had not by `forMs`.
   */
  async function answering(
    idleMs: number,
    forMs: number,
    write: (res: ServerResponse) => void,
    reader: (socket: Socket) => void,
  ): Promise<number | null> {
    let stalledAt: number | null = null;
    const started = Date.now();
    const server = createServer((_req, res) => {
      res.writeHead(200);
      const stop = watchStalledReader(res, idleMs, () => {
        stalledAt = Date.now() - started;
        res.destroy();
      });
      res.on('close', stop);
      write(res);
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const socket = connect((server.address() as AddressInfo).port, '127.0.0.1');
    socket.on('error', () => undefined);
    socket.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n');
    reader(socket);
    await new Promise((r) => setTimeout(r, forMs));
    socket.destroy();
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
    return stalledAt;
  }

  /** flood writes as fast as the answer takes it, for as long as it is open. */
  function flood(res: ServerResponse): void {
    const chunk = Buffer.alloc(64 * 1024, 'x');
    const pump = (): void => {
      while (!res.destroyed && res.write(chunk));
    };
    res.on('drain', pump);
    pump();
  }

  it('calls a client that reads nothing stalled after the idle time, not before', async () => {
    const at = await answering(400, 2_000, flood, (s) => s.pause());
    expect(at).not.toBeNull();
    expect(at!).toBeGreaterThanOrEqual(400);
  });

  it('leaves alone a reader that drains its socket within the idle time, and an answer with nothing to write yet', async () => {
    const slow = await answering(400, 2_000, flood, (s) => {
      s.pause();
      const t = setInterval(() => {
        s.resume();
        setTimeout(() => s.pause(), 20);
      }, 150);
      s.on('close', () => clearInterval(t));
    });
    expect(slow).toBeNull();
    // git still counting objects: nothing waits to be written, and the client reads nothing.
    const quiet = await answering(
      400,
      1_500,
      () => undefined,
      (s) => s.pause(),
    );
    expect(quiet).toBeNull();
  });
});
