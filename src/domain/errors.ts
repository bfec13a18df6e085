/** ErrorSpec is one entry of the error catalogue: the HTTP status and the message template. */
export interface ErrorSpec {
  /** status is the HTTP status a client sees. */
  readonly status: number;
  /** message is the template: each `%s` is filled, in order, from the arguments. */
  readonly message: string;
  /** when says, for the docs, when the error is answered. */
  readonly when: string;
}

/**
 * ERRORS is the catalogue of every error code the REST, git and replication APIs answer with (as
 * fastify's `FST_ERR_*`): a code's status and message template are written here and nowhere
 * else. docs/ERRORS.md has the same table, and `errors.test.ts` fails when the two differ.
 * Codes are stable: clients may branch on them; messages may be reworded.
 */
export const ERRORS = {
  ERR_BAD_REQUEST: { status: 400, message: '%s', when: 'a malformed or invalid request: body, parameter, name or value' },
  ERR_BAD_JSON: { status: 400, message: 'body is not valid JSON', when: 'a peer call whose body does not parse' },
  ERR_PKT_LINE: { status: 400, message: 'malformed pkt-line: %s', when: 'a git request body whose pkt-line framing is broken' },
  ERR_GIT_REFUSED: {
    status: 400,
    message: 'git %s refused the request: %s',
    when: "git upload-pack or receive-pack refused the request as malformed (git's words)",
  },
  ERR_UNAUTHORIZED: {
    status: 401,
    message: '%s',
    when: 'no credentials, an unknown, expired or revoked token, a disabled user, or a bad peer signature',
  },
  ERR_FORBIDDEN: { status: 403, message: '%s', when: "signed in, but the token's scope or the user's role does not allow it" },
  ERR_SSH_REFUSED: { status: 403, message: '%s', when: 'an SSH exec request that is not a git command on a valid repository' },
  ERR_NOT_FOUND: {
    status: 404,
    message: '%s',
    when: 'no such repository (or one the caller may not see), user, organisation, token, key, node, transaction or route',
  },
  ERR_BODY_TIMEOUT: { status: 408, message: 'request body idle for more than %s s', when: 'the client stopped sending a request body' },
  ERR_BODY_SLOW: {
    status: 408,
    message: 'request body not received within %s s',
    when: 'a JSON request body (at most `bodyLimit`) still arriving after twice the body idle time',
  },
  ERR_CONFLICT: { status: 409, message: '%s', when: 'the thing exists already, or the change contradicts the current state' },
  ERR_REF_TXN: { status: 409, message: '%s', when: "git update-ref refused a ref transaction (git's reason)" },
  ERR_REPLICA_STALE: {
    status: 409,
    message: '%s',
    when: "a participant's replica is behind the transaction's base generation (replication API)",
  },
  ERR_REPLICA_CONFLICT: {
    status: 409,
    message: '%s',
    when: "a participant's replica is ahead of the transaction's base generation (replication API)",
  },
  ERR_REPLICA_NOT_STAGED: {
    status: 409,
    message: '%s',
    when: 'a prepare names a pack shipped ahead that this participant does not hold: the coordinator ships it with the prepare (replication API)',
  },
  ERR_PREPARE_FAILED: {
    status: 409,
    message: '%s',
    when: 'a participant could not prepare: pack, connectivity or ref lock refused (replication API)',
  },
  ERR_TOO_LARGE: { status: 413, message: '%s', when: 'a body, a push or an inflated body over its limit; the message names the setting' },
  ERR_URI_TOO_LONG: { status: 414, message: '%s', when: 'a path parameter longer than 256 characters' },
  ERR_CONTENT_TYPE: { status: 415, message: '%s', when: 'a body of a content type the route does not take' },
  ERR_CONTENT_ENCODING: {
    status: 415,
    message: "unsupported content-encoding '%s'",
    when: 'a git body in an encoding other than gzip or identity',
  },
  ERR_PROTOCOL: {
    status: 426,
    message: 'node %s called with replication protocol %s; this node speaks %s',
    when: 'a peer speaking a replication protocol version this node does not',
  },
  ERR_RATE_LIMITED: {
    status: 429,
    message: 'too many failed authentications from this address, try again in %s s',
    when: 'too many unknown tokens from one address',
  },
  ERR_WRITE_RATE: {
    status: 429,
    message: 'user %s made more than %s API writes a minute through this node: try again in %s s',
    when: 'a user (not a cluster admin) over --max-api-writes-per-minute of REST creates, deletes and changes',
  },
  ERR_INTERNAL: { status: 500, message: 'internal error', when: 'a bug: the cause is logged on the node, not shown' },
  ERR_GIT_SERVICE: {
    status: 500,
    message: 'git %s refused the request: %s',
    when: 'git upload-pack or receive-pack failed on the server (disk, memory, corruption)',
  },
  ERR_GIT: { status: 500, message: 'git %s failed (%s): %s', when: 'a git command failed unexpectedly' },
  ERR_PROXY: {
    status: 502,
    message: 'proxy to in-sync replica failed: %s',
    when: 'a request proxied to the in-sync replica on another node failed before its answer began',
  },
  ERR_UNAVAILABLE: {
    status: 503,
    message: '%s',
    when: 'the cluster cannot do it now: quorum, a busy repo, a replica catching up, capacity; retry',
  },
  ERR_STORE_UNAVAILABLE: {
    status: 503,
    message: 'coordination store unavailable: %s',
    when: 'the coordination store cannot be reached: writes fail closed',
  },
  ERR_OUTCOME_UNKNOWN: {
    status: 503,
    message: '%s; the outcome is unknown: check before retrying',
    when: 'a transaction may or may not have committed: the store did not answer',
  },
} as const satisfies Record<string, ErrorSpec>;

/** ErrorCode is a code of the catalogue. */
export type ErrorCode = keyof typeof ERRORS;

/** Placeholders is the argument tuple a template needs: one value per `%s`. */
type Placeholders<S extends string> = S extends `${string}%s${infer Rest}` ? [string | number, ...Placeholders<Rest>] : [];

/** ErrorArgs is the argument tuple of a code's message template. */
export type ErrorArgs<C extends ErrorCode> = Placeholders<(typeof ERRORS)[C]['message']>;

/** formatError fills a code's message template with `args`, in order. */
export function formatError(code: ErrorCode, args: readonly (string | number)[]): string {
  let i = 0;
  return ERRORS[code].message.replace(/%s/g, () => String(args[i++] ?? ''));
}

/**
 * AppError is the base of every error the project raises on purpose: a catalogue code, the HTTP
 * status the catalogue gives it, a lowercase factual message made from the code's template, and
 * structured data. Build one with `appError` (typed arguments) or a subclass.
 */
export class AppError extends Error {
  readonly code: ErrorCode;
  readonly statusCode: number;
  readonly data: Record<string, unknown>;

  constructor(code: ErrorCode, args: readonly (string | number)[], data: Record<string, unknown> = {}, options?: { cause?: unknown }) {
    super(formatError(code, args), options);
    this.name = 'AppError';
    this.code = code;
    this.statusCode = ERRORS[code].status;
    this.data = data;
  }
}

/** appError builds the catalogue's error `code` with its template's arguments. */
export function appError<C extends ErrorCode>(
  code: C,
  args: ErrorArgs<C>,
  data: Record<string, unknown> = {},
  options?: { cause?: unknown },
): AppError {
  return new AppError(code, args, data, options);
}

/** badRequest is a 400 with a message a client can act on. */
export function badRequest(message: string, data: Record<string, unknown> = {}): AppError {
  return appError('ERR_BAD_REQUEST', [message], data);
}

/** notFound is a 404. */
export function notFound(message: string, data: Record<string, unknown> = {}): AppError {
  return appError('ERR_NOT_FOUND', [message], data);
}

/** conflict is a 409. */
export function conflict(message: string, data: Record<string, unknown> = {}): AppError {
  return appError('ERR_CONFLICT', [message], data);
}

/** unavailable is a 503: the cluster cannot do this now (quorum, store, capacity). */
export function unavailable(message: string, data: Record<string, unknown> = {}): AppError {
  return appError('ERR_UNAVAILABLE', [message], data);
}

/** unauthorized is a 401. */
export function unauthorized(message: string): AppError {
  return appError('ERR_UNAUTHORIZED', [message]);
}

/** forbidden is a 403. */
export function forbidden(message: string): AppError {
  return appError('ERR_FORBIDDEN', [message]);
}

/** StoreUnavailableError says the coordination store could not be reached: writes fail closed (I6). */
export class StoreUnavailableError extends AppError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_STORE_UNAVAILABLE', [message], {}, options);
    this.name = 'StoreUnavailableError';
  }
}

/**
 * clientErrorOf turns a client error raised by Fastify itself (bad JSON, schema validation, body
 * size, content type, path length: an error with a 4xx `statusCode` and an `FST_ERR_*` code)
 * into the catalogue's code for its status, keeping its message. Fastify's own codes are not
 * part of this API: they may change with Fastify's versions.
 */
export function clientErrorOf(status: number, message: string): AppError {
  const code: ErrorCode =
    status === 404
      ? 'ERR_NOT_FOUND'
      : status === 413
        ? 'ERR_TOO_LARGE'
        : status === 414
          ? 'ERR_URI_TOO_LONG'
          : status === 415
            ? 'ERR_CONTENT_TYPE'
            : 'ERR_BAD_REQUEST';
  return new AppError(code, [message]);
}

/** errorMessage returns a printable message for any thrown value. */
export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
