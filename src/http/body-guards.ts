import { Transform, type Duplex, type Readable, type TransformCallback, type Writable } from 'node:stream';
import { createGunzip } from 'node:zlib';
import { AppError, appError, badRequest, errorMessage } from '../domain/errors.js';

/** tooLarge is a 413 with a message that names the limit and the setting that raises it. */
export function tooLarge(message: string): AppError {
  return appError('ERR_TOO_LARGE', [message]);
}

/**
 * IdleGuard passes a request body through and fails it with 408 when the client sends nothing
 * for `idleMs` while the node is waiting for it. Time spent waiting on the consumer (git slower
 * than the client: the guard's buffer is full) is not the client's idleness. With `totalMs`, a
 * body still arriving that long after the guard was made fails with 408 too (a small body sent
 * a byte at a time).
 */
export class IdleGuard extends Transform {
  private last = Date.now();
  private readonly started = Date.now();
  private readonly timer: NodeJS.Timeout;

  constructor(
    private readonly idleMs: number,
    private readonly totalMs?: number,
  ) {
    super();
    this.timer = setInterval(() => this.check(), Math.max(50, Math.min(1_000, Math.floor(idleMs / 4))));
    this.timer.unref();
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.last = Date.now();
    cb(null, chunk);
  }

  override _flush(cb: TransformCallback): void {
    clearInterval(this.timer);
    cb();
  }

  override _destroy(err: Error | null, cb: (error?: Error | null) => void): void {
    clearInterval(this.timer);
    cb(err);
  }

  private check(): void {
    if (this.totalMs !== undefined && Date.now() - this.started > this.totalMs) {
      this.destroy(appError('ERR_BODY_SLOW', [Math.round(this.totalMs / 1000)]));
      return;
    }
    if (this.readableLength >= this.readableHighWaterMark || this.writableLength > 0) {
      this.last = Date.now();
      return;
    }
    if (Date.now() - this.last > this.idleMs) {
      this.destroy(appError('ERR_BODY_TIMEOUT', [Math.round(this.idleMs / 1000)]));
    }
  }
}

/**
 * watchStalledReader calls `onStall` once when `out`'s client has stalled for `idleMs`: the
 * answer waits to be written (its buffers, the kernel's included, are full) and no drain came in
 * that time. A git process that is still working (nothing waiting to be written) is not the
 * client's stall. It returns the function that ends the watch. (A clone whose client stopped
 * reading held its git process, and a git slot, up to the git time-out, an hour by default.)
 * Node's drain is the only progress signal there is, and a full socket drains only once the
 * client has taken about half its send buffer (Linux grows one to 4 MiB): a client that reads
 * slower than that much per `idleMs` looks stalled too, hence a long default (10 min: 3.4 KB/s).
 */
export function watchStalledReader(out: Writable, idleMs: number, onStall: () => void): () => void {
  let since = 0;
  const onDrain = (): void => {
    since = 0;
  };
  const timer = setInterval(
    () => {
      if (!out.writableNeedDrain) since = 0;
      else if (since === 0) since = Date.now();
      else if (Date.now() - since >= idleMs) {
        stop();
        onStall();
      }
    },
    Math.max(50, Math.min(5_000, Math.floor(idleMs / 4))),
  );
  timer.unref();
  out.on('drain', onDrain);
  const stop = (): void => {
    clearInterval(timer);
    out.off('drain', onDrain);
  };
  return stop;
}

/**
 * InflateCounter counts a gzip body's bytes on both sides of the gunzip and fails it with 413 past
 * `maxBytes` decompressed, or past `maxRatio` times its compressed size once over 1 MiB (a
 * "zip bomb": 3 MB that inflate to 1 GiB).
 */
class InflateCounter extends Transform {
  compressed = 0;
  private inflated = 0;

  constructor(
    private readonly maxBytes: number,
    private readonly maxRatio: number,
    private readonly what: string,
  ) {
    super();
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.inflated += chunk.length;
    if (this.inflated > this.maxBytes) {
      cb(tooLarge(`${this.what} is larger than ${this.maxBytes} bytes once decompressed`));
      return;
    }
    if (this.inflated > 1024 * 1024 && this.inflated > this.maxRatio * Math.max(1, this.compressed)) {
      cb(tooLarge(`${this.what} inflates more than ${this.maxRatio} times its compressed size`));
      return;
    }
    cb(null, chunk);
  }
}

/**
 * chain pipes streams one into the next, passing errors forward; the last one always has a
 * listener. A stream already destroyed when it is chained (a body guard that timed out before the
 * rest of the chain was built) passes its end on at once: its 'error' event has gone by.
 */
export function chain(first: Readable, ...rest: Duplex[]): Readable {
  let cur: Readable = first;
  for (const next of rest) {
    if (cur.destroyed) next.destroy(cur.errored ?? new Error('stream destroyed before it was chained'));
    else cur.on('error', (err) => next.destroy(err));
    cur.pipe(next);
    cur = next;
  }
  cur.on('error', () => undefined);
  return cur;
}

/** BodyLimits are the request-body limits of the git routes. */
export interface BodyLimits {
  readonly idleMs: number;
  readonly maxBytes: number;
  readonly maxInflateRatio: number;
}

/**
 * guardBody wraps a raw request body in the idle guard and, for `Content-Encoding: gzip`, a
 * bounded gunzip. Unknown encodings are a 415.
 */
export function guardBody(raw: Readable, encoding: string | undefined, limits: BodyLimits, what: string): Readable {
  if (encoding && encoding !== 'identity' && encoding !== 'gzip' && encoding !== 'x-gzip') {
    throw appError('ERR_CONTENT_ENCODING', [encoding.slice(0, 40)]);
  }
  const idle = new IdleGuard(limits.idleMs);
  if (!encoding || encoding === 'identity') return chain(raw, idle);
  const counter = new InflateCounter(limits.maxBytes, limits.maxInflateRatio, what);
  idle.on('data', (c: Buffer) => {
    counter.compressed += c.length;
  });
  const gunzip = createGunzip();
  return chain(raw, idle, gunzip, counter);
}

/** readBounded reads a whole (small) body into memory, failing with 413 past `maxBytes`. */
export async function readBounded(body: Readable, maxBytes: number, what: string): Promise<Buffer> {
  const parts: Buffer[] = [];
  let size = 0;
  try {
    for await (const chunk of body) {
      const b = chunk as Buffer;
      size += b.length;
      if (size > maxBytes) throw tooLarge(`${what} is larger than ${maxBytes} bytes`);
      parts.push(b);
    }
  } catch (err) {
    body.destroy();
    if (err instanceof AppError) throw err;
    throw badRequest(`request body: ${errorMessage(err)}`);
  }
  return Buffer.concat(parts);
}
