import { Transform, type TransformCallback } from 'node:stream';
import { PktLineReader } from './pkt-line.js';

/**
 * ShallowWatch passes a push's input to receive-pack unchanged and gives `onShallow` each
 * `shallow <oid>` line (a push from a shallow clone names its shallow commits before its
 * commands) before any chunk that completes the line goes on: what onShallow does (in place)
 * is done before receive-pack can read the line. onShallow(null) says the input stopped being
 * pkt-lines the watch can read, so a line may have gone unseen. Past the commands' flush the
 * watch only passes bytes on. An onShallow that throws fails the stream.
 */
export class ShallowWatch extends Transform {
  private readonly reader = new PktLineReader();
  private watching = true;

  constructor(private readonly onShallow: (oid: string | null) => void) {
    super();
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    if (this.watching) {
      const seen: Array<string | null> = [];
      try {
        this.reader.push(chunk);
        for (;;) {
          const pkt = this.reader.read();
          if (pkt === null) break;
          if (pkt.type === 'flush') {
            this.watching = false;
            this.reader.rest();
            break;
          }
          if (pkt.type === 'data' && pkt.data.subarray(0, 8).toString('latin1') === 'shallow ')
            seen.push(pkt.data.subarray(8).toString('latin1').trim());
        }
      } catch {
        this.watching = false;
        this.reader.rest();
        seen.push(null);
      }
      try {
        for (const oid of seen) this.onShallow(oid);
      } catch (err) {
        cb(err as Error);
        return;
      }
    }
    cb(null, chunk);
  }
}
