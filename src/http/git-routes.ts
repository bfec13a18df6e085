import { randomUUID } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { pipeline } from 'node:stream/promises';
import type { Readable } from 'node:stream';
import type { ChildProcess } from 'node:child_process';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { request as undiciRequest } from 'undici';
import { AppError, appError, badRequest, errorMessage, unavailable } from '../domain/errors.js';
import { addressKey } from '../domain/client-address.js';
import { repoIdFromUrl, type RepoId } from '../domain/repo-id.js';
import { HOP_HEADER, hopClientName, ROUTE_HEADER } from '../auth/peer-signature.js';
import { capabilitiesOf, encodePktLine, FLUSH, PktLineValidator } from '../git/pkt-line.js';
import { chain, guardBody, readBounded, tooLarge, watchStalledReader } from './body-guards.js';
import { terminate, waitClose } from '../git/runner.js';
import { PackTap, type PackTee } from '../replication/pack-tee.js';
import { PUSH_COMMANDS_BYTES, receivePackConfig, receivePackEnv, UPLOAD_PACK_CONFIG, watchShallow } from '../git/services.js';
import type { NodeDeps } from './deps.js';
import { header, refusal } from './access.js';
import { decideFor, refusalFor } from '../auth/authorize.js';

const SERVICES = new Set(['git-upload-pack', 'git-receive-pack']);
const NO_CACHE = { 'cache-control': 'no-cache, max-age=0, must-revalidate', expires: 'Fri, 01 Jan 1980 00:00:00 GMT', pragma: 'no-cache' };

interface RepoParams {
  owner: string;
  repo: string;
}

/** gitProtocolEnv passes a valid `Git-Protocol` header to git as GIT_PROTOCOL (gitprotocol-http(5)). */
function gitProtocolEnv(req: FastifyRequest): Record<string, string> {
  const h = req.headers['git-protocol'];
  const v = Array.isArray(h) ? h[0] : h;
  return v && /^[A-Za-z0-9=:.,_-]{1,256}$/.test(v) ? { GIT_PROTOCOL: v } : {};
}

function isV2(env: Record<string, string>): boolean {
  return (env.GIT_PROTOCOL ?? '').split(':').includes('version=2');
}

/** infoRefsNeed is what an advertisement needs on the repository: pushing `write`, fetching `read`. */
function infoRefsNeed(req: FastifyRequest): 'read' | 'write' {
  return (req.query as { service?: unknown }).service === 'git-receive-pack' ? 'write' : 'read';
}

/** GIT_REQUEST_TYPES are the bodies of git's POSTs: handed to the routes as streams, which guard them (guardBody). */
export const GIT_REQUEST_TYPES = ['application/x-git-upload-pack-request', 'application/x-git-receive-pack-request'];

/** registerGitRoutes adds the smart-HTTP endpoints (gitprotocol-http(5)); dumb HTTP is not served. */
export function registerGitRoutes(app: FastifyInstance, deps: NodeDeps): void {
  for (const type of GIT_REQUEST_TYPES) {
    app.addContentTypeParser(type, (_req, payload, done) => done(null, payload));
  }
  const limits = deps.config.limits;

  app.get<{ Params: RepoParams; Querystring: { service?: string } }>(
    '/:owner/:repo/info/refs',
    { config: { access: { repo: infoRefsNeed, via: 'git' } } },
    async (req, reply) => {
      const repoId = repoIdFromUrl(req.params.owner, req.params.repo);
      const service = req.query.service;
      if (typeof service !== 'string' || !SERVICES.has(service))
        throw badRequest('dumb HTTP is not supported: use a smart git client (service=git-upload-pack or git-receive-pack)');
      const write = service === 'git-receive-pack';
      const route = await routeOrProxy(deps, req, reply, repoId, write, service);
      if (!route) return reply;
      const env = write ? {} : gitProtocolEnv(req);
      const path = deps.storage.repoPath(repoId);
      // The advertisement names the capabilities (allow-reachable-sha1-in-want, filter) the
      // fetch that follows relies on: the same config as that fetch.
      const child = deps.git.spawn([service.slice(4), '--stateless-rpc', '--advertise-refs', '.'], {
        cwd: path,
        env,
        slot: await servingSlot(deps, req, repoId),
        ...(write ? {} : { config: UPLOAD_PACK_CONFIG }),
        timeoutMs: deps.config.gitTimeoutMs,
      });
      const prefix = isV2(env) ? Buffer.alloc(0) : Buffer.concat([encodePktLine(`# service=${service}\n`), FLUSH]);
      reply.hijack();
      await streamGit(deps, req.raw, reply.raw, child, null, `application/x-${service}-advertisement`, prefix, service);
      return reply;
    },
  );

  app.post<{ Params: RepoParams }>(
    '/:owner/:repo/git-upload-pack',
    { config: { access: { repo: 'read', via: 'git' } } },
    async (req, reply) => {
      const service = 'git-upload-pack';
      const repoId = repoIdFromUrl(req.params.owner, req.params.repo);
      checkContentType(req, service);
      const route = await routeOrProxy(deps, req, reply, repoId, false, service);
      if (!route) return reply;
      // The request (wants and haves) is read whole before git starts: a slow or stalled body
      // holds no git slot, only its bounded buffer.
      const raw = req.body as Readable;
      const body = chain(
        guardBody(
          raw,
          header(req, 'content-encoding'),
          { idleMs: limits.bodyIdleMs, maxBytes: limits.maxUploadRequestBytes, maxInflateRatio: limits.maxInflateRatio },
          'upload-pack request',
        ),
        new PktLineValidator({ packAfterFlush: false }),
      );
      const request = await readBounded(body, limits.maxUploadRequestBytes, 'upload-pack request');
      const child = deps.git.spawn(['upload-pack', '--stateless-rpc', '.'], {
        cwd: deps.storage.repoPath(repoId),
        env: gitProtocolEnv(req),
        config: UPLOAD_PACK_CONFIG,
        slot: await servingSlot(deps, req, repoId),
        timeoutMs: deps.config.gitTimeoutMs,
      });
      reply.hijack();
      await streamGit(deps, req.raw, reply.raw, child, request, `application/x-${service}-result`, Buffer.alloc(0), service);
      return reply;
    },
  );

  app.post<{ Params: RepoParams }>(
    '/:owner/:repo/git-receive-pack',
    { config: { access: { repo: 'write', via: 'git' } } },
    async (req, reply) => {
      const service = 'git-receive-pack';
      const repoId = repoIdFromUrl(req.params.owner, req.params.repo);
      checkContentType(req, service);
      const declared = Number(header(req, 'content-length') ?? NaN);
      if (Number.isFinite(declared) && declared > limits.maxPushBytes + PUSH_COMMANDS_BYTES)
        throw tooLarge(`push of ${declared} bytes is larger than the limit of ${limits.maxPushBytes} bytes`);
      const route = await routeOrProxy(deps, req, reply, repoId, true, service, PUSH_ROUTE_REUSE_MS);
      if (!route) return reply;
      // The first command's capabilities: `git push -q` asks for quiet (then no progress lines),
      // and a side band carries a refusal of the body to the user (git prints it).
      let caps: readonly string[] = [];
      const onFirst = (data: Buffer): void => {
        caps = capabilitiesOf(data);
      };
      // A push waiting in line for a git slot reads none of its body yet, and registers no upload.
      // The git process (and its slot) is taken before the request is hijacked: a 503 for a full
      // node is still an ordinary answer. Anything that throws before git holds the slot gives it back.
      const slot = await servingSlot(deps, req, repoId);
      const pushId = randomUUID();
      let guarded: Readable;
      let endUpload: () => void;
      try {
        guarded = guardBody(
          req.body as Readable,
          header(req, 'content-encoding'),
          { idleMs: limits.bodyIdleMs, maxBytes: limits.maxPushBytes + PUSH_COMMANDS_BYTES, maxInflateRatio: limits.maxInflateRatio },
          'push',
        );
        // The upload is registered on the replica, so a repair never swaps the directory receive-pack writes into.
        endUpload = await deps.activity.beginUpload(repoId);
      } catch (err) {
        slot();
        throw err;
      }
      let child: ChildProcess;
      try {
        child = deps.git.spawn(['receive-pack', '--stateless-rpc', '.'], {
          cwd: deps.storage.repoPath(repoId),
          slot,
          timeoutMs: deps.config.gitTimeoutMs,
          config: receivePackConfig(deps.config.hooksDir, limits.maxPushBytes, deps.config.fsckIgnore),
          env: receivePackEnv(deps.hookPort, pushId),
        });
      } catch (err) {
        endUpload();
        throw err;
      }
      // Only now, with nothing left to refuse the push before receive-pack, does its pack go to
      // the repo's other replicas as it arrives (PackTee), to be indexed beside receive-pack.
      const tee = deps.coordinator.openTee(repoId);
      const validated = chain(
        guarded,
        new PktLineValidator({ packAfterFlush: true, maxPreambleBytes: PUSH_COMMANDS_BYTES, onFirst }),
        watchShallow(deps.storage.repoPath(repoId)),
      );
      const body = tee ? chain(validated, new PackTap(tee)) : validated;
      reply.hijack();
      try {
        await servePush(deps, req, reply.raw, repoId, body, child, pushId, () => caps, tee);
      } finally {
        endUpload();
      }
      return reply;
    },
  );
}

/**
 * PUSH_ROUTE_REUSE_MS: a push's POST is served here without reading the store again when the
 * read of its `info/refs` (or any other) found this replica in sync at most this long ago.
 */
const PUSH_ROUTE_REUSE_MS = 2_000;

/**
 * slotFor takes a git process slot for the request's client, waiting in line for one
 * (GitRunner.acquire: a 503 when the wait is over or the line is full); a client that goes away
 * leaves the line.
 */
export async function slotFor(deps: NodeDeps, req: FastifyRequest): Promise<() => void> {
  const socket = req.raw.socket;
  const gone = new AbortController();
  const onClose = (): void => gone.abort();
  if (socket.destroyed) gone.abort();
  else socket.once('close', onClose);
  try {
    return await deps.git.acquire(clientOf(req), gone.signal);
  } finally {
    socket.off('close', onClose);
  }
}

/**
 * servingSlot takes a git slot (slotFor) for serving the local replica, and checks the caller's
 * access against the replica it reads: the decision was made before the slot's wait (up to
 * 30 s), perhaps on a policy of a repository deleted and created again since (decideFor). The
 * replica cannot be replaced between this check and git's start but by a create installing its
 * directory in that moment.
 */
async function servingSlot(deps: NodeDeps, req: FastifyRequest, repoId: RepoId): Promise<() => void> {
  const slot = await slotFor(deps, req);
  const decided = req.repoDecided;
  if (decided === null) return slot;
  try {
    const decision = await decideFor(deps.directory, decided, await deps.storage.incarnationOf(repoId));
    if (decision !== 'allow') throw refusal(decision, repoId, decided.need, 'git');
    return slot;
  } catch (err) {
    slot();
    throw err;
  }
}

/** clientOf is the address a request serves: the first node's view of it for a signed hop. */
function clientOf(req: FastifyRequest): string {
  // The route's access hook verified the hop header once (requireRepo). A repairing node's
  // fetches count as one client, whichever repository each repairs.
  return req.hopClient !== null ? hopClientName(req.hopClient) : addressKey(req.ip);
}

function checkContentType(req: FastifyRequest, service: string): void {
  const type = (header(req, 'content-type') ?? '').split(';')[0]?.trim();
  if (type !== `application/x-${service}-request`)
    throw appError('ERR_CONTENT_TYPE', [`content-type must be application/x-${service}-request`]);
}

/** routeOrProxy serves locally (returns true) or proxies the whole request to an in-sync peer (returns false). */
async function routeOrProxy(
  deps: NodeDeps,
  req: FastifyRequest,
  reply: FastifyReply,
  repoId: RepoId,
  write: boolean,
  service: string,
  reuseMs = 0,
): Promise<boolean> {
  // A member that proxied this request here read the store for it and found this node's replica
  // (of this incarnation) in sync: no need to read it again.
  if (req.hopClient !== null) {
    const vouched = deps.hops.verifyRoute(header(req, ROUTE_HEADER), repoId);
    if (vouched !== null && (await deps.storage.incarnationOf(repoId)) === vouched) return true;
  }
  const route = await deps.router.route(repoId, write, { reuseMs });
  if (route.kind === 'local') return true;
  // Only a hop signed by a member stops proxying; a client's own header is ignored.
  if (req.hopClient !== null) {
    if (await deps.router.waitLocal(repoId, write)) return true;
    throw unavailable(`replica of ${repoId} on this node is not in sync, try again`, { retryAfter: 1 });
  }
  deps.metrics.proxied.inc({ service });
  reply.hijack();
  await proxy(deps, req, reply.raw, route.url, route.incarnation === undefined ? null : deps.hops.signRoute(repoId, route.incarnation));
  return false;
}

/**
 * originForm is a request target's path and query: a request line may name the whole URL
 * (`GET http://host/o/r.git/info/refs`, absolute-form, which HTTP/1.1 servers must take; the
 * router reads its path), and the peer is asked for that path on its own address.
 */
function originForm(target: string): string {
  if (target.startsWith('/')) return target;
  const rest = target.replace(/^[a-z][a-z0-9+.-]*:\/\/[^/?#]*/i, '');
  return rest.startsWith('/') ? rest : `/${rest}`;
}

/** proxy streams a request to a peer and its answer back, both ways without buffering. */
async function proxy(deps: NodeDeps, req: FastifyRequest, res: ServerResponse, baseUrl: string, routeToken: string | null): Promise<void> {
  const headers: Record<string, string> = { [HOP_HEADER]: deps.hops.sign(clientOf(req)) };
  if (routeToken) headers[ROUTE_HEADER] = routeToken;
  for (const h of ['content-type', 'content-encoding', 'git-protocol', 'accept', 'authorization', 'user-agent']) {
    const v = req.headers[h];
    if (typeof v === 'string') headers[h] = v;
  }
  const ac = new AbortController();
  res.on('close', () => {
    if (!res.writableFinished) ac.abort();
  });
  const hasBody = req.method === 'POST';
  try {
    const upstream = await undiciRequest(`${baseUrl}${originForm(req.url)}`, {
      method: req.method as 'GET' | 'POST',
      headers,
      body: hasBody ? (req.body as Readable) : undefined,
      dispatcher: deps.peers.dispatcher,
      signal: ac.signal,
      headersTimeout: deps.config.gitTimeoutMs,
      bodyTimeout: deps.config.gitTimeoutMs,
    });
    const out: Record<string, string> = {};
    for (const [k, v] of Object.entries(upstream.headers)) {
      if (typeof v === 'string' && !['connection', 'transfer-encoding', 'keep-alive', 'content-length'].includes(k)) out[k] = v;
    }
    res.writeHead(upstream.statusCode, out);
    // writeHead only stores the status line (nothing is on the wire yet, though headersSent
    // says true). An upstream that abandons a push (outcome unknown: abandonPush) sends its
    // headers and closes; destroyed below before any byte went out, the client's connection
    // would make libcurl send the whole push again, and git show the answer to that second
    // try (`fetch first`) for a push that was applied. Sent now, the client sees a cut-off answer.
    res.flushHeaders();
    await pipeline(upstream.body, res);
  } catch (err) {
    if (!res.headersSent) {
      const failed = appError('ERR_PROXY', [errorMessage(err)]);
      res.writeHead(failed.statusCode, { 'content-type': 'text/plain' });
      res.end(`${failed.message}\n`);
    } else {
      res.destroy();
    }
  }
}

/**
 * streamGit pipes a request body into a git process and its stdout into the response. Headers go
 * out with git's first byte, so a body that fails validation before that still gets a 400; a
 * client that goes away kills git; a git that dies mid-stream ends the response in an error.
 */
async function streamGit(
  deps: NodeDeps,
  rawReq: IncomingMessage,
  res: ServerResponse,
  child: ReturnType<NodeDeps['git']['spawn']>,
  body: Readable | Buffer | null,
  contentType: string,
  prefix: Buffer,
  service: string,
  sideBand: () => boolean = () => false,
): Promise<void> {
  const started = Date.now();
  const bytes = { in: Buffer.isBuffer(body) ? body.length : 0, out: prefix.length };
  let failure: AppError | null = null;
  let stderr = '';
  child.stderr?.setEncoding('utf8').on('data', (d: string) => {
    if (stderr.length < 4096) stderr += d;
  });
  const onClientGone = (): void => {
    if (!res.writableFinished) void terminate(child);
  };
  // A request's 'close' fires once its body is read (Node >= 16); the response's 'close' before
  // it finished is what says the client went away.
  res.on('close', onClientGone);
  child.stdin?.on('error', () => undefined);
  if (Buffer.isBuffer(body)) {
    child.stdin?.end(body);
  } else if (body) {
    body.on('error', (err: Error) => {
      failure = err instanceof AppError ? err : badRequest(`request body: ${errorMessage(err)}`);
      void terminate(child);
    });
    body.on('data', (d: Buffer) => {
      bytes.in += d.length;
    });
    body.pipe(child.stdin!);
  } else {
    child.stdin?.end();
  }
  const writeHead = (): void => {
    if (res.headersSent) return;
    res.writeHead(200, { 'content-type': contentType, ...NO_CACHE });
    if (prefix.length) res.write(prefix);
  };
  child.stdout?.once('data', writeHead);
  child.stdout?.on('data', (d: Buffer) => {
    bytes.out += d.length;
  });
  child.stdout?.pipe(res, { end: false });
  let stalled = false;
  const idleMs = deps.config.limits.sendIdleMs;
  const stopWatch =
    idleMs > 0
      ? watchStalledReader(res, idleMs, () => {
          stalled = true;
          void terminate(child);
          res.destroy();
        })
      : () => undefined;
  const [code, signal] = await waitClose(child).finally(stopWatch);
  const f = failure as AppError | null;
  if (f && !res.headersSent) {
    // The rest of a refused body is not read: the connection closes after the answer. git shows
    // no body of a failed POST ("RPC failed; HTTP 413"): a push that asked for a side band gets
    // the refusal as git's own remote error instead (band 3, printed as `remote: …`).
    if (sideBand()) {
      res.writeHead(200, { 'content-type': contentType, ...NO_CACHE, connection: 'close' });
      res.end(encodePktLine(Buffer.concat([Buffer.from([3]), Buffer.from(`git-replication: ${f.message.slice(0, 4000)}\n`)])));
    } else {
      res.writeHead(f.statusCode, { 'content-type': 'text/plain', connection: 'close' });
      res.end(`${f.message}\n`);
    }
    closeAfter(res);
  } else if ((code !== 0 || signal) && !res.headersSent) {
    // git checks the request it was given; one it refuses before answering is the client's
    // error (a bad want, a malformed command), reported with git's own words.
    const why = stderr.trim().split('\n').pop() ?? '';
    const clients = /^fatal: (?!.*(?:out of memory|No space|Input\/output|corrupt|unable to (?:create|write|open)))/i.test(why) && !signal;
    // git's words, without the server's paths (the whole of it is in the node's log).
    const refused = appError(clients ? 'ERR_GIT_REFUSED' : 'ERR_GIT_SERVICE', [
      service,
      why.replace(/^fatal: /, '').replace(/'?\/[^\s'":]+'?/g, '<path>'),
    ]);
    res.writeHead(refused.statusCode, { 'content-type': 'text/plain', connection: 'close' });
    res.end(`${refused.message}\n`);
    closeAfter(res);
  } else if (code !== 0 || signal || f) {
    res.destroy();
  } else {
    writeHead();
    res.end();
  }
  const outcome = code === 0 && !signal && !f ? 'ok' : f ? 'bad_request' : 'error';
  deps.metrics.observeGit(service, contentType.endsWith('-advertisement'), outcome, (Date.now() - started) / 1000, bytes);
  if (stalled)
    deps.logger.info(
      { service, client: rawReq.socket.remoteAddress, bytesOut: bytes.out, idleMs },
      "client's socket did not drain for the send idle time: answer ended, git process killed",
    );
  else if (outcome === 'error' && !rawReq.destroyed)
    deps.logger.warn({ service, code, signal, stderr: stderr.trim() }, 'git process failed');
}

/**
 * closeAfter closes a connection whose request body was not read to its end, once the answer is
 * out: a client that keeps sending (or keeps the socket open without sending) holds nothing.
 * The socket is half-closed first so the answer is not lost to a reset, then dropped.
 */
function closeAfter(res: ServerResponse): void {
  res.once('finish', () => {
    const socket = res.socket;
    if (!socket || socket.destroyed) return;
    socket.end();
    setTimeout(() => socket.destroy(), 1_000).unref();
  });
}

/**
 * abandonPush ends a push's answer without a report (its outcome is unknown to the node). The
 * status line and headers go out first: a connection closed before any byte of the answer makes
 * libcurl send the whole request again on a fresh connection, and git would then show the
 * answer to that second try (a 503 while the store is down, say) for a push that may have
 * been applied. With headers sent, git reports a cut-off answer instead.
 */
function abandonPush(res: ServerResponse, child: ReturnType<NodeDeps['git']['spawn']>): void {
  if (!res.headersSent && !res.destroyed) {
    res.writeHead(200, { 'content-type': 'application/x-git-receive-pack-result', ...NO_CACHE });
    res.flushHeaders();
  }
  const socket = res.socket;
  // end() sends what is buffered, then FIN; the chunked body never gets its last chunk.
  if (socket && !socket.destroyed) {
    socket.end();
    setTimeout(() => socket.destroy(), 1_000).unref();
  } else {
    res.destroy();
  }
  void terminate(child);
}

/** servePush runs receive-pack with the node's proc-receive hook, which hands the ref updates to the coordinator. */
async function servePush(
  deps: NodeDeps,
  req: FastifyRequest,
  res: ServerResponse,
  repoId: RepoId,
  body: Readable,
  child: ChildProcess,
  pushId: string,
  /** caps are the push's first command's capabilities, once its commands were read. */
  caps: () => readonly string[],
  tee: PackTee | null,
): Promise<void> {
  let connected = false;
  const unregister = deps.hooks.expect(pushId, (exchange) => {
    connected = true;
    return deps.coordinator.handlePush(exchange, {
      repoId,
      receivePackPid: child.pid ?? -1,
      abandon: () => abandonPush(res, child),
      exited: waitClose(child),
      quiet: caps().includes('quiet'),
      tee,
      refusalFor: (incarnation) => (req.repoDecided ? refusalFor(deps.directory, req.repoDecided, incarnation) : Promise.resolve(null)),
      audit: (txn, refs) => ({
        action: 'push',
        user: req.caller?.principal.user ?? 'anonymous',
        token: req.caller?.token.name ?? '',
        repo: repoId,
        refs,
        txn,
      }),
    });
  });
  try {
    // Refused in band only before receive-pack reached its hook: then the push did not happen.
    const inBand = (): boolean => !connected && (caps().includes('side-band-64k') || caps().includes('side-band'));
    await streamGit(deps, req.raw, res, child, body, 'application/x-git-receive-pack-result', Buffer.alloc(0), 'git-receive-pack', inBand);
  } finally {
    unregister();
    // A receive-pack killed before its hook connected (the client went away while it checked
    // the pack) left its pack's .keep; handlePush, which drops it otherwise, never ran.
    if (!connected) {
      deps.coordinator.dropReceivedKeep({ repoId, receivePackPid: child.pid ?? -1, exited: waitClose(child) });
      // The peers' copies of a pack no transaction will name (receive-pack refused it, or the client left).
      deps.coordinator.dropTee(repoId, tee);
    }
  }
}
