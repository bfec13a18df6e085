import { describe, expect, it } from 'vitest';
import type { ClusterStore } from '../store/types.js';
import { SqliteStore } from '../store/sqlite/sqlite-store.js';
import { Directory } from './directory.js';
import { Authenticator, expiryWithin, hashToken, needAdminScope, readTokenInfo, tokenFromHeader, type Caller } from './tokens.js';

const basic = (s: string): string => `Basic ${Buffer.from(s).toString('base64')}`;

describe('tokenFromHeader', () => {
  it.each([
    ['Bearer grt_abc', 'grt_abc'],
    ['bearer   grt_abc ', 'grt_abc'],
    [basic('user:grt_abc'), 'grt_abc'],
    [basic('grt_abc:'), 'grt_abc'],
    [basic('grt_abc:x-oauth-basic'), 'grt_abc'],
    [basic('user:pa:ss'), 'pa:ss'],
    [basic('nocolon'), null],
    ['Bearer', null],
    ['Digest abc', null],
    [`Bearer ${'x'.repeat(300)}`, null],
    [undefined, null],
  ])('%j → %j', (header, token) => {
    expect(tokenFromHeader(header)).toBe(token);
  });
});

describe('Authenticator', () => {
  // The store edge: one good token, every other look-up misses.
  const good = 'grt_good';
  // A token made before users existed: a name and a cluster role, no user.
  const store = {
    getMeta: (key: string) =>
      Promise.resolve(key === `tokens/${hashToken(good)}` ? JSON.stringify({ name: 'ci', role: 'write', createdAt: '' }) : null),
    listMeta: () => Promise.resolve([]),
    setMeta: () => Promise.resolve(),
  } as unknown as ClusterStore;
  const directory = new Directory(store);

  it('keeps its cache bounded under a flood of random tokens', async () => {
    const auth = new Authenticator(store, 'tokens', directory);
    // From many addresses, so the per-address limit on failures does not stop the flood first.
    for (let i = 0; i < 10_000; i++)
      await expect(auth.require(`Bearer grt_random_${i}`, 'read', `10.0.${i >> 8}.${i & 255}`)).rejects.toMatchObject({ statusCode: 401 });
    expect(auth.cachedCount).toBeLessThanOrEqual(4_096);
    await expect(auth.require(`Bearer ${good}`, 'write')).resolves.toMatchObject({
      token: { name: 'ci', user: 'admin', scope: 'write' },
      principal: { user: 'admin', admin: true },
    });
  });

  it('answers 429 with Retry-After to an address past 20 failures a minute, and only to it', async () => {
    const auth = new Authenticator(store, 'tokens', directory);
    for (let i = 0; i < 20; i++)
      await expect(auth.identify(`Bearer grt_guess_${i}`, '10.9.9.9')).rejects.toMatchObject({ statusCode: 401 });
    const limited = await auth.identify(`Bearer ${good}`, '10.9.9.9').then(
      () => null,
      (e: unknown) => e as { statusCode: number; data: { retryAfter?: unknown } },
    );
    expect(limited?.statusCode).toBe(429);
    expect(typeof limited?.data.retryAfter).toBe('number');
    await expect(auth.identify(`Bearer ${good}`, '10.9.9.10')).resolves.toMatchObject({ token: { name: 'ci' } });
  });

  it("failures from 10,000 other addresses do not lift an address's 429", async () => {
    const auth = new Authenticator(store, 'tokens', directory);
    for (let i = 0; i < 20; i++)
      await expect(auth.identify(`Bearer grt_guess_${i}`, '10.9.9.9')).rejects.toMatchObject({ statusCode: 401 });
    for (let i = 0; i < 10_001; i++)
      await expect(auth.identify(`Bearer grt_flood_${i}`, `10.1.${i >> 8}.${i & 255}`)).rejects.toMatchObject({ statusCode: 401 });
    await expect(auth.identify(`Bearer ${good}`, '10.9.9.9')).rejects.toMatchObject({ statusCode: 429 });
    await expect(auth.identify(`Bearer ${good}`, '10.9.9.10')).resolves.toMatchObject({ token: { name: 'ci' } });
  });

  it('a failure table full of throttled addresses drops the oldest half, and the newest stay throttled', async () => {
    const auth = new Authenticator(store, 'tokens', directory, 10);
    const address = (i: number): string => `10.7.0.${i}`;
    for (let a = 0; a < 10; a++)
      for (let i = 0; i < 20; i++)
        await expect(auth.identify(`Bearer grt_guess_${i}`, address(a))).rejects.toMatchObject({ statusCode: 401 });
    // An eleventh address: the table is past its bound with every count throttled.
    await expect(auth.identify('Bearer grt_guess_x', address(10))).rejects.toMatchObject({ statusCode: 401 });
    await expect(auth.identify(`Bearer ${good}`, address(0))).resolves.toMatchObject({ token: { name: 'ci' } });
    await expect(auth.identify(`Bearer ${good}`, address(9))).rejects.toMatchObject({ statusCode: 429 });
  });

  it('identify: no header is anonymous, a bad token is a 401, a role too low is a 403', async () => {
    const auth = new Authenticator(store, 'tokens', directory);
    await expect(auth.identify(undefined)).resolves.toBeNull();
    await expect(auth.identify('Bearer grt_bad')).rejects.toMatchObject({ statusCode: 401 });
    await expect(auth.require(`Bearer ${good}`, 'admin')).rejects.toMatchObject({ statusCode: 403 });
  });
});

describe('readTokenInfo (migration of cluster-role tokens)', () => {
  it('reads a token of before users as the built-in admin user with its role as scope', () => {
    expect(readTokenInfo(JSON.stringify({ name: 'ci', role: 'read', createdAt: 'x' }))).toEqual({
      name: 'ci',
      user: 'admin',
      scope: 'read',
      createdAt: 'x',
    });
  });
  it('reads a user token as it is', () => {
    expect(readTokenInfo(JSON.stringify({ name: 'ci', user: 'alice', scope: 'write', createdAt: 'x', expiresAt: 'y' }))).toEqual({
      name: 'ci',
      user: 'alice',
      scope: 'write',
      createdAt: 'x',
      expiresAt: 'y',
    });
  });
});

describe('the limits a token puts on what it makes', () => {
  const caller = (scope: 'read' | 'write' | 'admin', expiresAt?: string): Caller => ({
    token: { id: 't1', name: 'ci', user: 'alice', scope, createdAt: '', ...(expiresAt ? { expiresAt } : {}) },
    principal: { user: 'alice', admin: false, orgs: new Map() },
  });

  it('needAdminScope refuses a token capped below admin, naming the act', () => {
    expect(() => needAdminScope(caller('write'), 'removing an SSH key')).toThrow(
      "token 'ci' has scope write; removing an SSH key needs an admin-scoped token",
    );
    expect(() => needAdminScope(caller('admin'), 'removing an SSH key')).not.toThrow();
  });

  it("expiryWithin gives what is asked, else the token's expiry, and refuses a later one", () => {
    const at = '2030-01-01T00:00:00.000Z';
    expect(expiryWithin(caller('admin'), undefined, 'add an SSH key')).toBeUndefined();
    expect(expiryWithin(caller('admin'), at, 'add an SSH key')).toBe(at);
    expect(expiryWithin(caller('admin', at), undefined, 'add an SSH key')).toBe(at);
    expect(expiryWithin(caller('admin', at), '2029-06-01T00:00:00Z', 'add an SSH key')).toBe('2029-06-01T00:00:00Z');
    expect(() => expiryWithin(caller('admin', at), '2031-01-01T00:00:00Z', 'add an SSH key')).toThrow(
      `token 'ci' expires at ${at} and may not add an SSH key that expires later`,
    );
  });
});

describe('Authenticator: what a user holds', () => {
  it('holds at most its limit of unexpired tokens per user (expired ones do not count), and sweeps the long expired with their last use', async () => {
    const store = new SqliteStore(':memory:');
    const directory = new Directory(store);
    await directory.addUser('alice', false);
    await directory.addUser('bob', false);
    const auth = new Authenticator(store, 'tokens', directory, undefined, 2);
    const short = await auth.create('alice', 'short', 'read', new Date(Date.now() + 200).toISOString());
    await auth.create('alice', 'a', 'read');
    await expect(auth.create('alice', 'b', 'read')).rejects.toThrow(/holds 2 tokens, the most one user may/);
    await auth.create('bob', 'b', 'read');
    await auth.require(`Bearer ${short.token}`, 'read', '10.0.0.1');
    await new Promise((r) => setTimeout(r, 300));
    const used = `token-used/${hashToken(short.token)}`;
    expect((await store.listMeta('token-used/')).map((m) => m.key)).toContain(used);
    expect((await auth.create('alice', 'c', 'read')).info.name).toBe('c');
    expect(await auth.sweepExpired(Date.now() - 60_000)).toBe(0);
    expect(await auth.sweepExpired(Date.now())).toBe(1);
    expect((await auth.list('alice')).map((t) => t.name).sort()).toEqual(['a', 'c']);
    expect((await auth.list('bob')).map((t) => t.name)).toEqual(['b']);
    expect((await store.listMeta('token-used/')).map((m) => m.key)).not.toContain(used);
    await store.close();
  });
});
