/**
 * AppError is the base of every error the project raises on purpose: a stable `code`, the HTTP
 * status a client sees, a lowercase factual message and structured data.
 */
export class AppError extends Error {
  readonly code: string;
  readonly statusCode: number;
  readonly data: Record<string, unknown>;

  constructor(code: string, statusCode: number, message: string, data: Record<string, unknown> = {}, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'AppError';
    this.code = code;
    this.statusCode = statusCode;
    this.data = data;
  }
}

/** badRequest is a 400 with a message a client can act on. */
export function badRequest(message: string, data: Record<string, unknown> = {}): AppError {
  return new AppError('ERR_BAD_REQUEST', 400, message, data);
}

/** notFound is a 404. */
export function notFound(message: string, data: Record<string, unknown> = {}): AppError {
  return new AppError('ERR_NOT_FOUND', 404, message, data);
}

/** conflict is a 409. */
export function conflict(message: string, data: Record<string, unknown> = {}): AppError {
  return new AppError('ERR_CONFLICT', 409, message, data);
}

/** unavailable is a 503: the cluster cannot do this now (quorum, store, capacity). */
export function unavailable(message: string, data: Record<string, unknown> = {}): AppError {
  return new AppError('ERR_UNAVAILABLE', 503, message, data);
}

/** unauthorized is a 401. */
export function unauthorized(message: string): AppError {
  return new AppError('ERR_UNAUTHORIZED', 401, message);
}

/** forbidden is a 403. */
export function forbidden(message: string): AppError {
  return new AppError('ERR_FORBIDDEN', 403, message);
}

/** StoreUnavailableError says the coordination store could not be reached: writes fail closed (I6). */
export class StoreUnavailableError extends AppError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_STORE_UNAVAILABLE', 503, `coordination store unavailable: ${message}`, {}, options);
    this.name = 'StoreUnavailableError';
  }
}

/** errorMessage returns a printable message for any thrown value. */
export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
