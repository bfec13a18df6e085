import { describe, expect, it } from 'vitest';
import { parsePublicUrl } from './serve.js';

describe('parsePublicUrl', () => {
  it('keeps an http(s) URL without its trailing slash, none as null', () => {
    expect(parsePublicUrl('https://git.example.com/')).toBe('https://git.example.com');
    expect(parsePublicUrl('https://git.example.com:8443/code/')).toBe('https://git.example.com:8443/code');
    expect(parsePublicUrl(null)).toBeNull();
    expect(parsePublicUrl('')).toBeNull();
  });

  it.each(['git.example.com', 'ftp://git.example.com', 'https://u:p@git.example.com', 'https://git.example.com/?x=1', 'https://x/#a'])(
    'refuses %s',
    (v) => {
      expect(() => parsePublicUrl(v)).toThrow(/--public-url \(PUBLIC_URL\)/);
    },
  );
});
