import { readdirSync, readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { AppError, appError, clientErrorOf, ERRORS, formatError, StoreUnavailableError, type ErrorCode } from './errors.js';

const docsUrl = new URL('../../docs/ERRORS.md', import.meta.url);
const httpDir = new URL('../http/', import.meta.url);

/** docsTable reads the rows of docs/ERRORS.md's table: code, status, message, when. */
function docsTable(): Map<string, { status: number; message: string; when: string }> {
  const rows = new Map<string, { status: number; message: string; when: string }>();
  for (const line of readFileSync(docsUrl, 'utf8').split('\n')) {
    const m = /^\| `([A-Z_]+)` \| (\d+) \| `([^`]*)` \| (.*) \|$/.exec(line);
    if (!m) continue;
    expect(rows.has(m[1]!), `${m[1]} twice in docs/ERRORS.md`).toBe(false);
    rows.set(m[1]!, { status: Number(m[2]), message: m[3]!, when: m[4]! });
  }
  return rows;
}

describe('the error catalogue', () => {
  it('docs/ERRORS.md has every code of the catalogue, with its status, message and use', () => {
    const docs = docsTable();
    for (const [code, spec] of Object.entries(ERRORS)) {
      expect(docs.get(code), `${code} in docs/ERRORS.md`).toEqual({ status: spec.status, message: spec.message, when: spec.when });
    }
  });

  it('docs/ERRORS.md lists no code the catalogue lacks', () => {
    const extra = [...docsTable().keys()].filter((code) => !(code in ERRORS));
    expect(extra).toEqual([]);
  });

  it.each(Object.entries(ERRORS))('%s has an error status and a lowercase message', (_code, spec) => {
    expect(spec.status).toBeGreaterThanOrEqual(400);
    expect(spec.status).toBeLessThan(600);
    expect(spec.message[0]).not.toMatch(/[A-Z]/);
  });

  it('fills templates in order and takes the status from the catalogue', () => {
    const err = appError('ERR_PROTOCOL', ['node-2', 3, '1-2']);
    expect(err).toBeInstanceOf(AppError);
    expect(err.message).toBe('node node-2 called with replication protocol 3; this node speaks 1-2');
    expect(err.statusCode).toBe(426);
    expect(err.code).toBe('ERR_PROTOCOL');
    expect(formatError('ERR_INTERNAL', [])).toBe('internal error');
    const store = new StoreUnavailableError('etcd down');
    expect([store.code, store.statusCode, store.message]).toEqual([
      'ERR_STORE_UNAVAILABLE',
      503,
      'coordination store unavailable: etcd down',
    ]);
  });

  it.each([
    [400, 'ERR_BAD_REQUEST'],
    [404, 'ERR_NOT_FOUND'],
    [413, 'ERR_TOO_LARGE'],
    [414, 'ERR_URI_TOO_LONG'],
    [415, 'ERR_CONTENT_TYPE'],
    [418, 'ERR_BAD_REQUEST'],
  ] as Array<[number, ErrorCode]>)("gives Fastify's client error of status %i the code %s", (status, code) => {
    const err = clientErrorOf(status, 'body/repo_id must be string');
    expect([err.code, err.statusCode, err.message]).toEqual([code, ERRORS[code].status, 'body/repo_id must be string']);
  });

  it('no route answers an error status outside the catalogue', () => {
    // /ready's 503 is a readiness answer for load balancers, not an error.
    const allowed = new Set(["if (blockers.length > 0) return reply.code(503).send({ ready: false, reason: blockers.join('; ') });"]);
    const direct: string[] = [];
    for (const f of readdirSync(httpDir).filter((n) => n.endsWith('.ts') && !n.endsWith('.test.ts'))) {
      for (const line of readFileSync(new URL(f, httpDir), 'utf8').split('\n')) {
        if (/\.code\([45]\d\d\)|writeHead\([45]\d\d/.test(line) && !allowed.has(line.trim())) direct.push(`${f}: ${line.trim()}`);
      }
    }
    expect(direct).toEqual([]);
  });
});
