import { createReadStream } from 'node:fs';
import { Readable } from 'node:stream';
import { Agent, request, type Dispatcher } from 'undici';
import { bodyDigest, PEER_AUTH_HEADER, signPeerRequest, type PeerTarget } from '../auth/peer-signature.js';
import { errorMessage } from '../domain/errors.js';
import { LFS_OID } from '../domain/lfs-ids.js';
import {
  common,
  formatRange,
  frameHead,
  LFS_PROTOCOL,
  PREPARE_CONTENT_TYPE,
  prepareToWire,
  PROTOCOL,
  PROTOCOL_HEADER,
  STAGE_PROTOCOL,
  stageToWire,
  stageUploadToWire,
  type UploadStageMessage,
  UPLOAD_STAGE_PROTOCOL,
  type PrepareRequest,
  type ProtocolRange,
} from './protocol.js';

/** PeerAnswer is a participant's answer: `prepared`/`committed`/`aborted`, or a refusal with a reason. */
export type PeerAnswer =
  | { ok: true; status: string; packHash?: string; body?: unknown }
  | { ok: false; status: 'stale' | 'conflict' | 'failed' | 'not_staged' | 'unreachable' | 'not_found' | 'unauthorized'; message: string };

/**
 * PeerClient makes the signed internal calls of the replication protocol to other nodes over
 * pooled keep-alive connections (undici), over HTTPS to `https://` peers.
 */
export class PeerClient {
  private readonly agent: Dispatcher;

  /** `ca` (PEM) verifies `https://` peers instead of the system CAs. */
  constructor(private readonly opts: { nodeId: string; secret: () => string; timeoutMs: number; ca?: Buffer; protocol?: ProtocolRange }) {
    this.agent = new Agent({ keepAliveTimeout: 30_000, connections: 128, pipelining: 1, ...(opts.ca ? { connect: { ca: opts.ca } } : {}) });
    this.bulk = new Agent({ keepAliveTimeout: 30_000, connections: 64, pipelining: 1, ...(opts.ca ? { connect: { ca: opts.ca } } : {}) });
  }

  /**
   * bulk is the connection pool of Git LFS objects' bytes (lfsPut, lfsGet): clients' uploads that
   * stall hold connections for as long as they last, and must not leave a transaction's prepare
   * or commit waiting for one (an outside review stalled a node's replication with 150 of them).
   */
  private readonly bulk: Dispatcher;

  /** postJson sends a signed JSON call (the signature covers the body) and maps the answer. */
  async postJson(target: PeerTarget, path: string, body: unknown, timeoutMs = this.opts.timeoutMs): Promise<PeerAnswer> {
    const payload = Buffer.from(JSON.stringify(body));
    return this.call(target, path, payload, payload.length, bodyDigest(payload), 'application/json', timeoutMs);
  }

  /**
   * preparePush sends a push's prepare with the pack file (if any) streamed after the metadata.
   * The signature covers the metadata, which names the pack's trailer hash (`pack_hash`).
   */
  async preparePush(target: PeerTarget, req: PrepareRequest, packPath: string | null, timeoutMs: number): Promise<PeerAnswer> {
    // has_pack: a push of refs to existing objects (a delete, a branch at a known commit) has none.
    const meta = Buffer.from(JSON.stringify({ ...prepareToWire(req), has_pack: packPath !== null }));
    const head = frameHead(meta);
    const body = packPath === null ? head : Readable.from(prepend(head, () => packFile(packPath)));
    return this.call(
      target,
      '/replicate/prepare',
      body,
      packPath === null ? head.length : null,
      bodyDigest(meta),
      PREPARE_CONTENT_TYPE,
      timeoutMs,
    );
  }

  /**
   * stagePack ships a push's pack to a replica ahead of its prepare (`/replicate/stage`), framed
   * as a prepare is. A peer that speaks no protocol with staging is answered `failed` at once.
   */
  async stagePack(
    target: PeerTarget,
    meta: { repoId: string; packHash: string; fsckIgnore?: readonly string[] },
    packPath: string,
    timeoutMs: number,
  ): Promise<PeerAnswer> {
    if (!this.speaks(target, STAGE_PROTOCOL))
      return { ok: false, status: 'failed', message: `node ${target.id} cannot stage packs (protocol ${formatRange(target.protocol)})` };
    const json = Buffer.from(JSON.stringify(stageToWire(meta)));
    const head = frameHead(json);
    return this.call(
      target,
      '/replicate/stage',
      Readable.from(prepend(head, () => packFile(packPath))),
      null,
      bodyDigest(json),
      PREPARE_CONTENT_TYPE,
      timeoutMs,
    );
  }

  /** speaks says whether this node and `target` have a common protocol version of at least `version`. */
  speaks(target: PeerTarget | undefined, version: number): boolean {
    return target !== undefined && (common(this.opts.protocol ?? PROTOCOL, target.protocol) ?? 0) >= version;
  }

  /**
   * stageUpload copies a push's pack to a replica while the client still uploads it
   * (`/replicate/stage-upload`): `pack` is the pack as it arrives, and the answer names the hash
   * the replica's `index-pack --fix-thin` gave it (`packHash`). Destroying `pack` aborts the call.
   */
  async stageUpload(target: PeerTarget, meta: UploadStageMessage, pack: Readable, timeoutMs: number): Promise<PeerAnswer> {
    if (!this.speaks(target, UPLOAD_STAGE_PROTOCOL)) {
      pack.destroy();
      return { ok: false, status: 'failed', message: `node ${target.id} cannot stage uploads (protocol ${formatRange(target.protocol)})` };
    }
    const json = Buffer.from(JSON.stringify(stageUploadToWire(meta)));
    return this.call(
      target,
      '/replicate/stage-upload',
      Readable.from(prepend(frameHead(json), pack)),
      null,
      bodyDigest(json),
      PREPARE_CONTENT_TYPE,
      timeoutMs,
    );
  }

  /**
   * lfsHave asks a replica which of `oids` it holds for the repository's incarnation: oid →
   * size; null when it could not be asked (unreachable, too old, not a replica of that incarnation).
   */
  async lfsHave(
    target: PeerTarget,
    meta: LfsRef & { oids: readonly string[] },
    timeoutMs = this.opts.timeoutMs,
  ): Promise<LfsHolding | null> {
    if (!this.speaks(target, LFS_PROTOCOL)) return null;
    const answer = await this.postJson(
      target,
      '/replicate/lfs/have',
      { repo_id: meta.repoId, incarnation: meta.incarnation, oids: meta.oids },
      timeoutMs,
    );
    return answer.ok ? holding(answer.body) : null;
  }

  /** lfsList names every LFS object a replica holds for the repository's incarnation; null as lfsHave. */
  async lfsList(target: PeerTarget, meta: LfsRef, timeoutMs = this.opts.timeoutMs): Promise<LfsHolding | null> {
    if (!this.speaks(target, LFS_PROTOCOL)) return null;
    const answer = await this.postJson(target, '/replicate/lfs/list', { repo_id: meta.repoId, incarnation: meta.incarnation }, timeoutMs);
    return answer.ok ? holding(answer.body) : null;
  }

  /**
   * lfsPut copies an LFS object to a replica (`/replicate/lfs/put`): `content` is its bytes as
   * they come (destroying it aborts the call). The replica checks them against the oid and size
   * and answers once the object is on its disk, fsynced.
   */
  async lfsPut(
    target: PeerTarget,
    meta: LfsRef & { oid: string; size: number },
    content: Readable,
    timeoutMs: number,
    signal?: AbortSignal,
  ): Promise<PeerAnswer> {
    if (!this.speaks(target, LFS_PROTOCOL)) {
      content.destroy();
      return {
        ok: false,
        status: 'failed',
        message: `node ${target.id} cannot store LFS objects (protocol ${formatRange(target.protocol)})`,
      };
    }
    const json = Buffer.from(JSON.stringify({ repo_id: meta.repoId, incarnation: meta.incarnation, oid: meta.oid, size: meta.size }));
    return this.call(
      target,
      '/replicate/lfs/put',
      Readable.from(prepend(frameHead(json), content)),
      null,
      bodyDigest(json),
      PREPARE_CONTENT_TYPE,
      timeoutMs,
      { signal, dispatcher: this.bulk },
    );
  }

  /**
   * lfsGet opens an LFS object a replica holds (`/replicate/lfs/get`): its size and bytes, or
   * null when the replica does not hold it or cannot be asked. `signal` aborts the read.
   */
  async lfsGet(
    target: PeerTarget,
    meta: LfsRef & { oid: string },
    timeoutMs: number,
    signal?: AbortSignal,
  ): Promise<{ size: number; body: Readable } | null> {
    if (!this.speaks(target, LFS_PROTOCOL)) return null;
    const path = '/replicate/lfs/get';
    const payload = Buffer.from(JSON.stringify({ repo_id: meta.repoId, incarnation: meta.incarnation, oid: meta.oid }));
    try {
      const auth = signPeerRequest(this.opts.secret(), this.opts.nodeId, target, {
        method: 'POST',
        path,
        contentLength: payload.length,
        digest: bodyDigest(payload),
      });
      const res = await request(`${target.url}${path}`, {
        method: 'POST',
        body: payload,
        headers: {
          [PEER_AUTH_HEADER]: auth,
          [PROTOCOL_HEADER]: String(common(this.opts.protocol ?? PROTOCOL, target.protocol)),
          'content-type': 'application/json',
        },
        dispatcher: this.bulk,
        signal: signal ? AbortSignal.any([signal, AbortSignal.timeout(timeoutMs)]) : AbortSignal.timeout(timeoutMs),
        headersTimeout: timeoutMs,
        bodyTimeout: timeoutMs,
      });
      const size = Number(res.headers['content-length']);
      if (res.statusCode !== 200 || !Number.isSafeInteger(size)) {
        res.body.resume();
        return null;
      }
      return { size, body: res.body };
    } catch {
      return null;
    }
  }

  private async call(
    target: PeerTarget,
    path: string,
    body: Buffer | Readable,
    contentLength: number | null,
    digest: string,
    contentType: string,
    timeoutMs: number,
    via: { signal?: AbortSignal | undefined; dispatcher?: Dispatcher } = {},
  ): Promise<PeerAnswer> {
    const own = this.opts.protocol ?? PROTOCOL;
    const version = common(own, target.protocol);
    if (version === null) {
      if (body instanceof Readable) body.destroy();
      return {
        ok: false,
        status: 'failed',
        message: `node ${target.id} speaks replication protocol ${formatRange(target.protocol)}, this node ${formatRange(own)}`,
      };
    }
    const signal = via.signal ? AbortSignal.any([via.signal, AbortSignal.timeout(timeoutMs)]) : AbortSignal.timeout(timeoutMs);
    try {
      const auth = signPeerRequest(this.opts.secret(), this.opts.nodeId, target, { method: 'POST', path, contentLength, digest });
      const res = await request(`${target.url}${path}`, {
        method: 'POST',
        body,
        headers: { [PEER_AUTH_HEADER]: auth, [PROTOCOL_HEADER]: String(version), 'content-type': contentType },
        dispatcher: via.dispatcher ?? this.agent,
        signal,
        headersTimeout: timeoutMs,
        bodyTimeout: timeoutMs,
      });
      const text = await res.body.text();
      let json: { status?: string; error?: string; message?: string; pack_hash?: unknown } = {};
      try {
        json = JSON.parse(text) as typeof json;
      } catch {
        // a non-JSON answer is reported by status code below
      }
      if (res.statusCode >= 200 && res.statusCode < 300)
        return {
          ok: true,
          status: json.status ?? 'ok',
          ...(typeof json.pack_hash === 'string' ? { packHash: json.pack_hash } : {}),
          body: json,
        };
      const message = json.message ?? json.error ?? `http ${res.statusCode}`;
      if (res.statusCode === 404) return { ok: false, status: 'not_found', message };
      if (res.statusCode === 401) return { ok: false, status: 'unauthorized', message };
      const st = json.status;
      return { ok: false, status: st === 'stale' || st === 'conflict' || st === 'not_staged' ? st : 'failed', message };
    } catch (err) {
      if (body instanceof Readable) body.destroy();
      return { ok: false, status: 'unreachable', message: errorMessage(err) };
    }
  }

  /** health reads a peer's /health (for load-aware routing). */
  async health(baseUrl: string, timeoutMs = 2_000): Promise<{ cpu: number; memory: number } | null> {
    try {
      const res = await request(`${baseUrl}/health`, { dispatcher: this.agent, signal: AbortSignal.timeout(timeoutMs) });
      const json = (await res.body.json()) as { load?: { cpu?: number; memory?: number } };
      return { cpu: json.load?.cpu ?? 100, memory: json.load?.memory ?? 100 };
    } catch {
      return null;
    }
  }

  /** dispatcher is the shared connection pool, for streaming proxies. */
  get dispatcher(): Dispatcher {
    return this.agent;
  }

  /** close drops the pooled connections. */
  async close(): Promise<void> {
    await this.bulk.close();
    await this.agent.close();
  }
}

/** LfsRef names the LFS objects of one repository's incarnation. */
export interface LfsRef {
  readonly repoId: string;
  readonly incarnation: string;
}

/** LfsHolding is a replica's answer about its LFS objects: oid → size, and whether it holds every acknowledged one (LFS_COMPLETE). */
export interface LfsHolding {
  readonly objects: Map<string, number>;
  readonly complete: boolean;
}

/** holding reads a replica's `{objects, complete}` answer; null for anything else. */
function holding(body: unknown): LfsHolding | null {
  const b = body as { objects?: unknown; complete?: unknown } | undefined;
  const objects = sizes(b?.objects);
  return objects ? { objects, complete: b?.complete === true } : null;
}

/** sizes reads a replica's `{oid: size}` answer; null for anything else. */
function sizes(objects: unknown): Map<string, number> | null {
  if (typeof objects !== 'object' || objects === null || Array.isArray(objects)) return null;
  const out = new Map<string, number>();
  for (const [oid, size] of Object.entries(objects))
    if (LFS_OID.test(oid) && Number.isSafeInteger(size) && (size as number) >= 0) out.set(oid, size as number);
  return out;
}

/** packFile reads a pack file in large chunks. */
function packFile(path: string): Readable {
  return createReadStream(path, { highWaterMark: 256 * 1024 });
}

/**
 * prepend yields `head`, then what `rest` yields: a framed body (metadata, then the pack). A
 * file's stream is made only once the head is taken (`rest` a function): a call refused before
 * its body is read opens no file.
 */
async function* prepend(head: Buffer, rest: Readable | (() => Readable)): AsyncGenerator<Buffer> {
  yield head;
  for await (const chunk of typeof rest === 'function' ? rest() : rest) yield chunk as Buffer;
}
