import { Transform, type TransformCallback } from 'node:stream';
import { AppError, appError } from '../domain/errors.js';

/** PktLineError says a body is not valid pkt-line framing. */
export class PktLineError extends AppError {
  constructor(message: string) {
    super('ERR_PKT_LINE', [message]);
    this.name = 'PktLineError';
  }
}

/** FLUSH is the flush-pkt `0000`. */
export const FLUSH = Buffer.from('0000');

/** encodePktLine frames one payload (a string gets a trailing newline added by the caller). */
export function encodePktLine(payload: string | Buffer): Buffer {
  const body = typeof payload === 'string' ? Buffer.from(payload) : payload;
  if (body.length > 65516) throw new RangeError('pkt-line payload too long');
  const len = (body.length + 4).toString(16).padStart(4, '0');
  return Buffer.concat([Buffer.from(len), body]);
}

/** A decoded pkt: `data` for a payload line, or one of the special packets. */
export type Pkt = { type: 'data'; data: Buffer } | { type: 'flush' } | { type: 'delim' } | { type: 'response-end' };

/**
 * PktLineReader decodes pkt-lines incrementally from chunks. It throws PktLineError on a bad length.
 */
/** capabilitiesOf lists the capabilities after a pkt's NUL (a push's first command carries them); none without a NUL. */
export function capabilitiesOf(data: Buffer): string[] {
  const nul = data.indexOf(0);
  return nul === -1
    ? []
    : data
        .subarray(nul + 1)
        .toString('latin1')
        .split(/[ \n]/)
        .filter(Boolean);
}

export class PktLineReader {
  private buf: Buffer = Buffer.alloc(0);

  /** push adds bytes; read() then yields the complete pkts. */
  push(chunk: Buffer): void {
    this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk]);
  }

  /** read returns the next complete pkt or null when more bytes are needed. */
  read(): Pkt | null {
    if (this.buf.length < 4) return null;
    const head = this.buf.subarray(0, 4).toString('latin1');
    if (!/^[0-9a-fA-F]{4}$/.test(head)) throw new PktLineError(`bad length header '${printable(head)}'`);
    const len = parseInt(head, 16);
    if (len === 0) return this.consume(4, { type: 'flush' });
    if (len === 1) return this.consume(4, { type: 'delim' });
    if (len === 2) return this.consume(4, { type: 'response-end' });
    if (len < 4) throw new PktLineError(`invalid length ${len}`);
    if (this.buf.length < len) return null;
    const data = Buffer.from(this.buf.subarray(4, len));
    return this.consume(len, { type: 'data', data });
  }

  /** buffered is how many bytes wait to be decoded. */
  buffered(): number {
    return this.buf.length;
  }

  /** rest returns the bytes not yet decoded (for example the pack after receive-pack's commands). */
  rest(): Buffer {
    const r = this.buf;
    this.buf = Buffer.alloc(0);
    return r;
  }

  private consume(n: number, pkt: Pkt): Pkt {
    this.buf = this.buf.subarray(n);
    return pkt;
  }
}

function printable(s: string): string {
  return s.replace(/[^\x20-\x7e]/g, '?');
}

/**
 * PktLineValidator passes bytes through unchanged while checking the pkt-line framing of a smart
 * HTTP request: upload-pack requests are pkt-lines to the end; receive-pack requests are pkt-lines
 * up to the first flush, then raw pack data (`packAfterFlush`). A framing error fails the stream
 * with PktLineError before the bad bytes reach git.
 */
export class PktLineValidator extends Transform {
  private readonly reader = new PktLineReader();
  private readonly packAfterFlush: boolean;
  private readonly maxPreambleBytes: number;
  private inPack = false;
  private sawAny = false;
  private sawCaps = false;
  private seen = 0;
  /** flushesLeft is how many flush-pkts still come before the pack: the commands', and the push options' when the first command asks for them. */
  private flushesLeft = 1;

  private readonly onFirst: ((data: Buffer) => void) | undefined;
  /** allowEmpty lets an input with no pkt-line at all end well (a git client over SSH that closes at once). */
  private readonly allowEmpty: boolean;

  /**
   * maxPreambleBytes bounds the pkt-lines before the pack (all of them without one); 413
   * beyond. onFirst is given the first data pkt holding a NUL: a push's first command, with its
   * capabilities (a push from a shallow clone sends `shallow` lines before it).
   */
  constructor(opts: { packAfterFlush: boolean; maxPreambleBytes?: number; onFirst?: (data: Buffer) => void; allowEmpty?: boolean }) {
    super();
    this.allowEmpty = opts.allowEmpty ?? false;
    this.packAfterFlush = opts.packAfterFlush;
    this.maxPreambleBytes = opts.maxPreambleBytes ?? Number.POSITIVE_INFINITY;
    this.onFirst = opts.onFirst;
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    if (this.inPack) {
      cb(null, chunk);
      return;
    }
    try {
      this.reader.push(chunk);
      for (;;) {
        const pkt = this.reader.read();
        if (pkt === null) break;
        // The preamble counted pkt by pkt: one whose flush comes in the same chunk is bounded too.
        this.seen += pkt.type === 'data' ? 4 + pkt.data.length : 4;
        if (this.seen > this.maxPreambleBytes) break;
        if (!this.sawCaps && pkt.type === 'data' && pkt.data.includes(0)) {
          this.sawCaps = true;
          // A push asking for push-options sends them after its commands, up to a second flush:
          // they count towards the preamble's limit too (before, they streamed on as "pack").
          if (capabilitiesOf(pkt.data).includes('push-options')) this.flushesLeft = 2;
          this.onFirst?.(pkt.data);
        }
        this.sawAny = true;
        if (pkt.type === 'flush' && this.packAfterFlush && --this.flushesLeft === 0) {
          this.inPack = true;
          this.reader.rest();
          break;
        }
      }
      // What is buffered of a pkt not yet whole counts too: a length of 65520 promised is not a
      // reason to hold up to that many bytes past the limit.
      if (!this.inPack && this.seen + this.reader.buffered() > this.maxPreambleBytes) {
        cb(appError('ERR_TOO_LARGE', [`request has more than ${this.maxPreambleBytes} bytes of commands`]));
        return;
      }
    } catch (err) {
      cb(err as Error);
      return;
    }
    cb(null, chunk);
  }

  override _flush(cb: TransformCallback): void {
    if (this.inPack) {
      cb();
      return;
    }
    const rest = this.reader.rest();
    if (rest.length > 0) cb(new PktLineError(`truncated pkt-line at end of body (${rest.length} bytes left)`));
    else if (!this.sawAny && !this.allowEmpty) cb(new PktLineError('empty request body'));
    else cb();
  }
}
