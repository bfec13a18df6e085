import { Readable } from 'node:stream';
import type { FastifyInstance } from 'fastify';
import { bodyDigest } from '../auth/peer-signature.js';
import { AppError, badRequest, unauthorized } from '../domain/errors.js';
import { isOid, refNameProblem } from '../domain/ref-name.js';
import { isFsckIgnoreList } from '../git/fsck-policy.js';
import { parseRepoId } from '../domain/repo-id.js';
import { PREPARE_CONTENT_TYPE } from '../cluster/peer-client.js';
import { PrepareRefusal, type PrepareRequest } from '../replication/participant.js';
import { parseSignedJson } from './access.js';
import type { NodeDeps } from './deps.js';

const MAX_META_BYTES = 64 * 1024 * 1024;

/** MAX_STAGED_PACKS bounds the packs one prepare may name (a group of pushes brings one each). */
const MAX_STAGED_PACKS = 1_000;

const txnSchema = {
  body: {
    type: 'object',
    required: ['transaction_id', 'coordinator_id'],
    properties: {
      transaction_id: { type: 'string', minLength: 1, maxLength: 100 },
      coordinator_id: { type: 'string', minLength: 1, maxLength: 100 },
      repo_id: { type: 'string', maxLength: 201 },
    },
  },
} as const;

interface TxnBody { transaction_id: string; coordinator_id: string; repo_id?: string }

/** parsePrepare validates a prepare body in the seed's field names. */
export function parsePrepare(body: unknown): PrepareRequest {
  if (typeof body !== 'object' || body === null) throw badRequest('prepare body must be a JSON object');
  const b = body as Record<string, unknown>;
  const missing = ['transaction_id', 'coordinator_id', 'repo_id'].filter((k) => typeof b[k] !== 'string' || b[k] === '');
  if (missing.length) throw badRequest(`missing required fields: ${missing.join(', ')}`);
  const kind = b.operation;
  if (kind !== 'create' && kind !== 'delete' && kind !== 'push') throw badRequest('operation must be create, delete or push');
  const int = (k: string): number => {
    const v = b[k];
    if (typeof v !== 'number' || !Number.isInteger(v)) throw badRequest(`${k} must be an integer`);
    return v;
  };
  const str = (k: string): string => {
    const v = b[k];
    if (typeof v !== 'string') throw badRequest(`${k} must be a string`);
    return v;
  };
  const rawUpdates = b.updates ?? [];
  if (!Array.isArray(rawUpdates)) throw badRequest('updates must be an array');
  const updates = rawUpdates.map((u: unknown) => {
    const o = u as Record<string, unknown>;
    if (typeof o?.ref !== 'string' || typeof o.old !== 'string' || typeof o.new !== 'string' || !isOid(o.old) || !isOid(o.new) || !o.ref.startsWith('refs/')) {
      throw badRequest('each update needs ref, old and new object ids');
    }
    return { ref: o.ref, oldOid: o.old, newOid: o.new };
  });
  const packHash = b.pack_hash;
  if (packHash !== undefined && (typeof packHash !== 'string' || !isOid(packHash))) throw badRequest('pack_hash must be an object id');
  const fsckIgnore = b.fsck_ignore;
  if (fsckIgnore !== undefined && !isFsckIgnoreList(fsckIgnore)) throw badRequest('fsck_ignore must be a list of fsck message ids');
  const stagedPacks = b.staged_packs ?? [];
  if (!Array.isArray(stagedPacks) || stagedPacks.length > MAX_STAGED_PACKS || !stagedPacks.every((h) => typeof h === 'string' && isOid(h))) throw badRequest(`staged_packs must be a list of at most ${MAX_STAGED_PACKS} object ids`);
  const newHead = b.new_head;
  if (newHead !== undefined && (typeof newHead !== 'string' || !newHead.startsWith('refs/heads/') || refNameProblem(newHead) !== null)) throw badRequest('new_head must be a branch name');
  return {
    txnId: str('transaction_id'), coordinator: str('coordinator_id'), repoId: parseRepoId(b.repo_id), kind,
    incarnation: str('incarnation'), baseGeneration: int('base_generation'), fencingToken: int('fencing_token'),
    newChecksum: str('new_checksum'), updates, ...(typeof packHash === 'string' ? { packHash } : {}),
    ...(typeof newHead === 'string' ? { newHead } : {}),
    ...(isFsckIgnoreList(fsckIgnore) ? { fsckIgnore } : {}),
    ...(stagedPacks.length ? { stagedPacks } : {}),
  };
}

/** parseStage validates a stage call's metadata: the repo and the pack's trailer hash. */
function parseStage(body: unknown): { repoId: string; packHash: string; fsckIgnore?: readonly string[] } {
  if (typeof body !== 'object' || body === null) throw badRequest('stage metadata must be a JSON object');
  const b = body as Record<string, unknown>;
  if (typeof b.pack_hash !== 'string' || !isOid(b.pack_hash)) throw badRequest('pack_hash must be an object id');
  if (b.fsck_ignore !== undefined && !isFsckIgnoreList(b.fsck_ignore)) throw badRequest('fsck_ignore must be a list of fsck message ids');
  return { repoId: parseRepoId(b.repo_id), packHash: b.pack_hash, ...(isFsckIgnoreList(b.fsck_ignore) ? { fsckIgnore: b.fsck_ignore } : {}) };
}

/**
 * readFrame reads `<len>\n<json>` from the front of a prepare body and returns the metadata and
 * the pack behind it as a stream. No unshift: a small body can have ended by the time its
 * metadata is parsed, and unshifting after the end loses the pack.
 */
async function readFrame(stream: Readable, signedDigest: string | null): Promise<{ meta: unknown; pack: Readable }> {
  const it = stream[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
  let buf = Buffer.alloc(0);
  for (;;) {
    const nl = buf.indexOf(10);
    if (nl !== -1) {
      const len = Number(buf.subarray(0, nl).toString('latin1'));
      if (!Number.isInteger(len) || len <= 0 || len > MAX_META_BYTES) throw badRequest('prepare metadata length invalid');
      if (buf.length >= nl + 1 + len) {
        // The signature covers the metadata (which names the pack's hash), never the streamed pack.
        if (bodyDigest(buf.subarray(nl + 1, nl + 1 + len)) !== signedDigest) throw unauthorized('peer signature does not match the prepare metadata');
        let meta: unknown;
        try {
          meta = JSON.parse(buf.subarray(nl + 1, nl + 1 + len).toString('utf8'));
        } catch {
          throw badRequest('prepare metadata is not JSON');
        }
        const rest = buf.subarray(nl + 1 + len);
        const pack = Readable.from((async function* () {
          if (rest.length) yield rest;
          for (let r = await it.next(); !r.done; r = await it.next()) yield r.value;
        })());
        return { meta, pack };
      }
    } else if (buf.length > 20) {
      throw badRequest('prepare body has no metadata length');
    }
    const r = await it.next();
    if (r.done) throw badRequest('prepare body ended before its metadata');
    buf = Buffer.concat([buf, r.value]);
  }
}

/**
 * registerReplicateRoutes adds the seed's peer endpoints; each route accepts only calls signed by
 * a cluster member for this node's incarnation, whose signature covers the body it carries.
 */
export function registerReplicateRoutes(app: FastifyInstance, deps: NodeDeps): void {
  void app.register(async (peer) => {
    const PEER = { access: 'peer' } as const;
    peer.addContentTypeParser(PREPARE_CONTENT_TYPE, (_req, payload, done) => done(null, payload));
    peer.removeContentTypeParser('application/json');
    peer.addContentTypeParser('application/json', { parseAs: 'string', bodyLimit: MAX_META_BYTES }, (req, body, done) => parseSignedJson(req, body as string, done));

    peer.post('/replicate/prepare', { config: PEER }, async (req, reply) => {
      const framed = (req.headers['content-type'] ?? '').startsWith(PREPARE_CONTENT_TYPE);
      const frame = framed ? await readFrame(req.body as Readable, req.peerDigest) : null;
      const prep = parsePrepare(frame ? frame.meta : req.body);
      const hasPack = frame !== null && (frame.meta as { has_pack?: unknown }).has_pack === true;
      if (frame && !hasPack) frame.pack.resume();
      const raw = hasPack ? frame.pack : null;
      try {
        await deps.participant.prepare(prep, raw, { local: false });
      } catch (err) {
        raw?.resume();
        if (err instanceof PrepareRefusal) return reply.code(err.statusCode).send({ status: err.status, transaction_id: prep.txnId, server_id: deps.nodeId, message: err.message, code: err.code });
        throw err;
      }
      return { status: 'prepared', transaction_id: prep.txnId, server_id: deps.nodeId };
    });

    // A push's pack, shipped while its coordinator waits for the repo lock (protocol 3).
    peer.post('/replicate/stage', { config: PEER }, async (req, reply) => {
      if (!(req.headers['content-type'] ?? '').startsWith(PREPARE_CONTENT_TYPE)) throw badRequest(`stage takes ${PREPARE_CONTENT_TYPE}`);
      const frame = await readFrame(req.body as Readable, req.peerDigest);
      const stage = parseStage(frame.meta);
      try {
        await deps.participant.stage(stage.repoId, stage.packHash, frame.pack, stage.fsckIgnore);
      } catch (err) {
        frame.pack.resume();
        if (err instanceof PrepareRefusal) return reply.code(err.statusCode).send({ status: err.status, server_id: deps.nodeId, message: err.message, code: err.code });
        throw err;
      }
      return { status: 'staged', pack_hash: stage.packHash, server_id: deps.nodeId };
    });

    peer.post<{ Body: TxnBody }>('/replicate/commit', { config: PEER, schema: txnSchema }, async (req) => {
      await deps.participant.commit(req.body.transaction_id);
      return { status: 'committed', transaction_id: req.body.transaction_id, server_id: deps.nodeId };
    });

    peer.post<{ Body: TxnBody }>('/replicate/abort', { config: PEER, schema: txnSchema }, async (req) => {
      await deps.participant.abort(req.body.transaction_id, req.body.repo_id ?? '');
      return { status: 'aborted', transaction_id: req.body.transaction_id, server_id: deps.nodeId };
    });
  });
}

/** isClientError says whether an error is the caller's fault (4xx). */
export function isClientError(err: unknown): boolean {
  return err instanceof AppError && err.statusCode < 500;
}
