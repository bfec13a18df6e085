import { describe, expect, it } from 'vitest';
import type { ClusterStore } from '../store/types.js';
import { Authenticator, hashToken, tokenFromHeader } from './tokens.js';

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
  const store = { getMeta: (key: string) => Promise.resolve(key === `tokens/${hashToken(good)}` ? JSON.stringify({ name: 'ci', role: 'write', createdAt: '' }) : null) } as unknown as ClusterStore;

  it('keeps its cache bounded under a flood of random tokens', async () => {
    const auth = new Authenticator(store, 'tokens');
    for (let i = 0; i < 10_000; i++) await expect(auth.require(`Bearer grt_random_${i}`, 'read')).rejects.toMatchObject({ statusCode: 401 });
    expect(auth.cachedCount).toBeLessThanOrEqual(4_096);
    await expect(auth.require(`Bearer ${good}`, 'write')).resolves.toMatchObject({ name: 'ci' });
  });

  it('identify: no header is anonymous, a bad token is a 401, a role too low is a 403', async () => {
    const auth = new Authenticator(store, 'tokens');
    await expect(auth.identify(undefined)).resolves.toBeNull();
    await expect(auth.identify('Bearer grt_bad')).rejects.toMatchObject({ statusCode: 401 });
    await expect(auth.require(`Bearer ${good}`, 'admin')).rejects.toMatchObject({ statusCode: 403 });
  });
});
