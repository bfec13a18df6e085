import { PassThrough, Transform, type Readable, type TransformCallback } from 'node:stream';
import { MAX_COPY_TIPS } from '../cluster/protocol.js';
import { isZeroOid } from '../domain/ref-name.js';
import { capabilitiesOf, PktLineReader } from '../git/pkt-line.js';
import { parseCommand } from '../git/proc-receive.js';

/** TEE_MAX_BUFFERED bounds the bytes held for one peer that reads slower than the client sends: beyond, that peer is dropped. */
export const TEE_MAX_BUFFERED = 8 * 1024 * 1024;

/**
 * PackTee copies a push's pack to the repo's other replicas while the client uploads it, so that
 * their `index-pack` runs beside the coordinator's receive-pack instead of after it. It never
 * slows the client: a peer that falls TEE_MAX_BUFFERED behind is dropped (its copy aborted),
 * and a push whose copies failed ships its pack as before. `results` says, per peer, the hash
 * the peer staged the pack under (null: not staged); the calls start with the pack's first byte,
 * so a push without a pack (deletes only) makes none.
 */
export class PackTee {
  private readonly streams = new Map<string, PassThrough>();
  private readonly staged = new Map<string, Promise<string | null>>();
  private started = false;
  private ended = false;

  private written = 0;
  /** tips are the new objects the push's commands name (PackTap sets them before the pack), null if unknown. */
  tips: readonly string[] | null = null;
  private readonly maxBuffered: number;
  private readonly maxBytes: number;

  /** maxBuffered: the bytes one peer may fall behind; maxBytes: a pack larger aborts every copy (the push size limit). */
  constructor(
    private readonly peers: readonly string[],
    /**
     * open starts the copy to `node` with the pack as it arrives, and the push's new tips (null:
     * not known); resolves with the hash it was staged under, or null.
     */
    private readonly open: (node: string, pack: Readable, tips: readonly string[] | null) => Promise<string | null>,
    opts: { maxBuffered?: number; maxBytes?: number | undefined } = {},
  ) {
    this.maxBuffered = opts.maxBuffered ?? TEE_MAX_BUFFERED;
    this.maxBytes = opts.maxBytes ?? Number.POSITIVE_INFINITY;
  }

  /** results are the peers' staged hashes (null: not staged), one per peer a copy started to. */
  get results(): ReadonlyMap<string, Promise<string | null>> {
    return this.staged;
  }

  /** write passes the next bytes of the pack to every peer still keeping up. */
  write(chunk: Buffer): void {
    if (this.ended) return;
    this.written += chunk.length;
    if (this.written > this.maxBytes) {
      // Over SSH nothing caps the client's bytes before receive-pack refuses them: the copies stop here.
      this.abort(new Error(`pack larger than ${this.maxBytes} bytes`));
      return;
    }
    if (!this.started) this.start();
    for (const [node, s] of this.streams) {
      if (s.destroyed) {
        this.streams.delete(node);
        continue;
      }
      s.write(chunk);
      if (s.writableLength + s.readableLength > this.maxBuffered) this.drop(node, new Error(`peer ${node} fell behind the upload`));
    }
  }

  /** end says the pack is complete. */
  end(): void {
    if (this.ended) return;
    this.ended = true;
    for (const s of this.streams.values()) s.end();
    this.streams.clear();
  }

  /** abort ends every copy unfinished: the upload failed, the peers' index-pack sees a cut pack. */
  abort(reason: Error): void {
    if (this.ended) return;
    this.ended = true;
    for (const s of this.streams.values()) s.destroy(reason);
    this.streams.clear();
  }

  private start(): void {
    this.started = true;
    for (const node of this.peers) {
      const s = new PassThrough({ highWaterMark: 256 * 1024 });
      // A copy the peer client ended (the peer went away) fails only that copy.
      s.on('error', () => undefined);
      this.streams.set(node, s);
      // Once the peer answered (or its call failed before reading the pack) nothing more is held for it.
      const settled = (hash: string | null): string | null => {
        this.drop(node, new Error(`copy to ${node} ended`));
        return hash;
      };
      this.staged.set(
        node,
        this.open(node, s, this.tips).then(settled, () => settled(null)),
      );
    }
  }

  private drop(node: string, reason: Error): void {
    this.streams.get(node)?.destroy(reason);
    this.streams.delete(node);
  }
}

/**
 * PackTap passes a push body through unchanged and hands the pack in it (the bytes after the
 * commands' flush, and after the push options' flush when the client sends options) to a
 * PackTee. The body was validated as pkt-lines before it (PktLineValidator); a body that is not
 * what this expects only ends the copies.
 */
export class PackTap extends Transform {
  private readonly reader = new PktLineReader();
  private state: 'commands' | 'options' | 'pack' | 'off' = 'commands';
  private options = false;
  private first = true;
  /** tips: the new objects the commands name, null once there are more than MAX_COPY_TIPS (or a line is not a command). */
  private tips: Set<string> | null = new Set();

  constructor(private readonly tee: PackTee) {
    super();
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    if (this.state === 'pack') this.tee.write(chunk);
    else if (this.state !== 'off') this.preamble(chunk);
    cb(null, chunk);
  }

  override _flush(cb: TransformCallback): void {
    if (this.state === 'pack') this.tee.end();
    else this.tee.abort(new Error('push body has no pack'));
    cb();
  }

  override _destroy(err: Error | null, cb: (error: Error | null) => void): void {
    this.tee.abort(err ?? new Error('push body ended early'));
    cb(err);
  }

  private preamble(chunk: Buffer): void {
    try {
      this.reader.push(chunk);
      for (;;) {
        const pkt = this.reader.read();
        if (pkt === null) return;
        // The capabilities come with the first command (`shallow` lines may come before it).
        if (this.first && pkt.type === 'data' && pkt.data.includes(0)) {
          this.first = false;
          this.options = capabilitiesOf(pkt.data).includes('push-options');
        }
        if (pkt.type === 'data' && this.state === 'commands') this.addTip(pkt.data);
        if (pkt.type !== 'flush') continue;
        if (this.state === 'commands' && this.options) {
          this.state = 'options';
          continue;
        }
        this.state = 'pack';
        this.tee.tips = this.tips && this.tips.size > 0 ? [...this.tips] : null;
        const rest = this.reader.rest();
        if (rest.length > 0) this.tee.write(rest);
        return;
      }
    } catch {
      this.state = 'off';
      this.tee.abort(new Error('push body is not pkt-lines'));
    }
  }

  /** addTip takes the new object of a command line (`<old> <new> <ref>`); `shallow <oid>` lines name none. */
  private addTip(line: Buffer): void {
    if (this.tips === null || line.subarray(0, 8).toString('latin1') === 'shallow ') return;
    let newOid: string;
    try {
      // The capabilities after the first command's NUL are not part of it.
      newOid = parseCommand(line.includes(0) ? line.subarray(0, line.indexOf(0)) : line).newOid;
    } catch {
      this.tips = null;
      return;
    }
    if (!isZeroOid(newOid)) this.tips.add(newOid);
    if (this.tips.size > MAX_COPY_TIPS) this.tips = null;
  }
}
