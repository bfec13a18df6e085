import { describe, expect, it } from 'vitest';
import { tokenFromHeader } from './tokens.js';

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
