import type { Readable } from 'node:stream';
import { finished } from 'node:stream/promises';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { AppError, badRequest, notFound } from '../domain/errors.js';
import {
  LFS_HAVE_SCHEMA,
  LFS_OBJECT_SCHEMA,
  LFS_REF_SCHEMA,
  MAX_META_BYTES,
  parseLfsPut,
  parsePrepare,
  parseStage,
  parseStageUpload,
  PREPARE_CONTENT_TYPE,
  readFrame,
  TXN_SCHEMA,
  UNSTAGE_SCHEMA,
  type TxnMessage,
  type UnstageMessage,
} from '../cluster/protocol.js';
import { parseRepoId } from '../domain/repo-id.js';
import { PrepareRefusal } from '../replication/participant.js';
import { parseSignedJson } from './access.js';
import { chain, IdleGuard } from './body-guards.js';
import type { NodeDeps } from './deps.js';

/**
 * registerReplicateRoutes adds the seed's peer endpoints; each route accepts only calls signed by
 * a cluster member for this node's incarnation, whose signature covers the body it carries.
 */
export function registerReplicateRoutes(app: FastifyInstance, deps: NodeDeps): void {
  /**
   * idleGuarded fails a pack body that stops arriving for the body idle time (408), as a client's
   * push body does: a coordinator frozen or cut off mid-shipment would otherwise keep this
   * replica's index-pack, and the upload and transaction it holds (so its repair), waiting.
   */
  const idleGuarded = (body: Readable): IdleGuard => chain(body, new IdleGuard(deps.config.limits.bodyIdleMs)) as IdleGuard;
  /**
   * bodyFailure is the guard's own 408 (the body stopped arriving), which explains a refusal
   * better than git's "early EOF"; any other error of the body (a peer that went away) leaves the
   * participant's answer as it was.
   */
  const bodyFailure = (guarded: IdleGuard | null, err: unknown): unknown => (guarded?.errored instanceof AppError ? guarded.errored : err);
  /**
   * drained reads what is left of a pack body and resolves once the request ended or failed.
   * Every answer waits for it: a peer client (undici) that has its answer stops sending the body
   * but keeps the connection, so an answer sent before the whole body was read left the request
   * open here until the idle guard failed it, 30 s later. A pack stream given up early (index-pack
   * refused the pack) leaves the rest to the request itself, read for at most the body idle time.
   * A body that did not end (its sender went quiet) is answered on a connection closed after it.
   */
  const drained = async (req: FastifyRequest, reply: FastifyReply, pack: Readable | null, guarded: IdleGuard | null): Promise<void> => {
    if (pack && !pack.destroyed && !pack.readableEnded) {
      pack.resume();
      await finished(pack).catch(() => undefined);
    }
    const raw = req.raw;
    if (raw.complete || raw.destroyed) return;
    if (!guarded?.errored) {
      // Off the guard first: nothing reads the guard any more, so its full buffer would pause `raw` again.
      raw.unpipe();
      raw.resume();
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        finished(raw).catch(() => undefined),
        new Promise((r) => {
          timer = setTimeout(r, deps.config.limits.bodyIdleMs);
        }),
      ]);
      clearTimeout(timer);
    }
    if (raw.complete) return;
    void reply.header('connection', 'close');
    reply.raw.once('finish', () => raw.socket?.destroy());
  };
  /**
   * afterBody runs a participant's work on a framed body and answers only once the body was read
   * to its end (`drained`). A refusal is taken as it stands when the work fails (`bodyFailure`),
   * before that wait: a sender that goes quiet afterwards does not turn it into a 408.
   */
  const afterBody = async <T>(
    req: FastifyRequest,
    reply: FastifyReply,
    pack: Readable | null,
    guarded: IdleGuard | null,
    work: () => Promise<T>,
  ): Promise<{ value: T } | { err: unknown }> => {
    let out: { value: T } | { err: unknown };
    try {
      out = { value: await work() };
    } catch (caught) {
      out = { err: bodyFailure(guarded, caught) };
    }
    await drained(req, reply, pack, guarded);
    return out;
  };
  void app.register(async (peer) => {
    const PEER = { access: 'peer' } as const;
    peer.addContentTypeParser(PREPARE_CONTENT_TYPE, (_req, payload, done) => done(null, payload));
    peer.removeContentTypeParser('application/json');
    peer.addContentTypeParser('application/json', { parseAs: 'string', bodyLimit: MAX_META_BYTES }, (req, body, done) =>
      parseSignedJson(req, body as string, done),
    );

    peer.post('/replicate/prepare', { config: PEER }, async (req, reply) => {
      const framed = (req.headers['content-type'] ?? '').startsWith(PREPARE_CONTENT_TYPE);
      const guarded = framed ? idleGuarded(req.body as Readable) : null;
      const frame = guarded ? await readFrame(guarded, req.peerDigest) : null;
      const prep = parsePrepare(frame ? frame.meta : req.body);
      const hasPack = frame !== null && (frame.meta as { has_pack?: unknown }).has_pack === true;
      if (frame && !hasPack) frame.pack.resume();
      const raw = hasPack ? frame.pack : null;
      const out = await afterBody(req, reply, frame?.pack ?? null, guarded, () => deps.participant.prepare(prep, raw, { local: false }));
      if ('err' in out) {
        const err = out.err;
        if (err instanceof PrepareRefusal)
          return reply
            .code(err.statusCode)
            .send({ status: err.status, transaction_id: prep.txnId, server_id: deps.nodeId, message: err.message, code: err.code });
        throw err;
      }
      return { status: 'prepared', transaction_id: prep.txnId, server_id: deps.nodeId };
    });

    /**
     * stageRoute serves a framed pack a peer ships to be staged: `stage` parses the metadata and
     * keeps the pack, resolving with the hash it is staged under. A participant's refusal is its
     * answer (the body's own 408 first). Either answer waits until the body was read to its end
     * (`afterBody`): the rest of one not needed is dropped.
     */
    const stageRoute =
      (stage: (meta: unknown, pack: Readable) => Promise<string>) =>
      async (req: FastifyRequest, reply: FastifyReply): Promise<unknown> => {
        if (!(req.headers['content-type'] ?? '').startsWith(PREPARE_CONTENT_TYPE)) throw badRequest(`stage takes ${PREPARE_CONTENT_TYPE}`);
        const guarded = idleGuarded(req.body as Readable);
        const frame = await readFrame(guarded, req.peerDigest);
        // A pack staged already, or here already, is not read by `stage`: the rest of the body is, first.
        const out = await afterBody(req, reply, frame.pack, guarded, () => stage(frame.meta, frame.pack));
        if ('err' in out) {
          const err = out.err;
          if (err instanceof PrepareRefusal)
            return reply.code(err.statusCode).send({ status: err.status, server_id: deps.nodeId, message: err.message, code: err.code });
          throw err;
        }
        return { status: 'staged', pack_hash: out.value, server_id: deps.nodeId };
      };

    // A push's pack, shipped while its coordinator waits for the repo lock (protocol 3).
    peer.post(
      '/replicate/stage',
      { config: PEER },
      stageRoute(async (meta, pack) => {
        const stage = parseStage(meta);
        await deps.participant.stage(stage.repoId, stage.packHash, pack, stage.fsckIgnore);
        return stage.packHash;
      }),
    );

    // A push's pack as the client uploads it to the coordinator (protocol 4): staged under the
    // hash this replica's index-pack gives it, which the answer names.
    peer.post(
      '/replicate/stage-upload',
      { config: PEER },
      stageRoute(async (meta, pack) => {
        const stage = parseStageUpload(meta);
        return deps.participant.stageUpload(stage.repoId, pack, stage.fsckIgnore, stage.tips);
      }),
    );

    // A staged pack its push will not prepare with (refused, or failed before the prepare).
    peer.post<{ Body: UnstageMessage }>('/replicate/unstage', { config: PEER, schema: UNSTAGE_SCHEMA }, async (req) => {
      await deps.participant.unstage(parseRepoId(req.body.repo_id), req.body.pack_hash);
      return { status: 'unstaged', server_id: deps.nodeId };
    });

    // Git LFS objects between the replicas of a repository (protocol 5): which of these it holds,
    // all it holds, one's bytes, and a copy to keep. A node that holds no replica of the named
    // incarnation answers 404 and keeps nothing.
    peer.post<{ Body: { repo_id: string; incarnation: string; oids: string[] } }>(
      '/replicate/lfs/have',
      { config: PEER, schema: LFS_HAVE_SCHEMA },
      async (req) => {
        const ref = await deps.lfs.localRef(parseRepoId(req.body.repo_id), req.body.incarnation);
        return { objects: await deps.lfs.have(ref, req.body.oids), complete: deps.lfs.completeHere(ref), server_id: deps.nodeId };
      },
    );

    peer.post<{ Body: { repo_id: string; incarnation: string } }>(
      '/replicate/lfs/list',
      { config: PEER, schema: LFS_REF_SCHEMA },
      async (req) => {
        const ref = await deps.lfs.localRef(parseRepoId(req.body.repo_id), req.body.incarnation);
        return { objects: Object.fromEntries(await deps.lfs.list(ref)), complete: deps.lfs.completeHere(ref), server_id: deps.nodeId };
      },
    );

    peer.post<{ Body: { repo_id: string; incarnation: string; oid: string } }>(
      '/replicate/lfs/get',
      { config: PEER, schema: LFS_OBJECT_SCHEMA },
      async (req, reply) => {
        const ref = await deps.lfs.localRef(parseRepoId(req.body.repo_id), req.body.incarnation);
        const got = await deps.lfs.open(ref, req.body.oid);
        if (!got) throw notFound(`no LFS object ${req.body.oid} here`);
        got.body.on('error', () => reply.raw.destroy());
        return reply.type('application/octet-stream').header('content-length', String(got.size)).send(got.body);
      },
    );

    peer.post(
      '/replicate/lfs/put',
      { config: PEER },
      stageRoute(async (meta, content) => {
        const m = parseLfsPut(meta);
        const ref = await deps.lfs.localRef(m.repoId, m.incarnation);
        await deps.lfs.accept(ref, m.oid, m.size, content);
        return m.oid;
      }),
    );

    peer.post<{ Body: TxnMessage }>('/replicate/commit', { config: PEER, schema: TXN_SCHEMA }, async (req) => {
      await deps.participant.commit(req.body.transaction_id, { confirm: req.body.coordinator_confirms !== true });
      return { status: 'committed', transaction_id: req.body.transaction_id, server_id: deps.nodeId };
    });

    peer.post<{ Body: TxnMessage }>('/replicate/abort', { config: PEER, schema: TXN_SCHEMA }, async (req) => {
      await deps.participant.abort(req.body.transaction_id, req.body.repo_id ?? '');
      return { status: 'aborted', transaction_id: req.body.transaction_id, server_id: deps.nodeId };
    });
  });
}

/** isClientError says whether an error is the caller's fault (4xx). */
export function isClientError(err: unknown): boolean {
  return err instanceof AppError && err.statusCode < 500;
}
