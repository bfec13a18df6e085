import { describe, expect, it } from 'vitest';
import { fsckConfig, indexPackStrict, isFsckIgnoreList, parseFsckIgnore, TOLERATED_BY_DEFAULT } from './fsck-policy.js';

describe('fsck policy', () => {
  it('reads default, none and lists; refuses path-safety checks and junk', () => {
    expect(parseFsckIgnore(undefined)).toBe(TOLERATED_BY_DEFAULT);
    expect(parseFsckIgnore('none')).toEqual([]);
    expect(parseFsckIgnore('zeroPaddedFilemode, badTimezone')).toEqual(['zeroPaddedFilemode', 'badTimezone']);
    expect(() => parseFsckIgnore('hasDotgit')).toThrow(/stays fatal/);
    expect(() => parseFsckIgnore('bad=id')).toThrow(/not a git fsck message id/);
  });
  it('renders git config and index-pack flags', () => {
    expect(fsckConfig('receive', ['a', 'b'])).toEqual({ 'receive.fsck.a': 'ignore', 'receive.fsck.b': 'ignore' });
    expect(indexPackStrict(['a', 'b'])).toBe('--strict=a=ignore,b=ignore');
    expect(indexPackStrict([])).toBe('--strict');
  });
  it("checks a peer's list", () => {
    expect(isFsckIgnoreList(['zeroPaddedFilemode'])).toBe(true);
    expect(isFsckIgnoreList(['hasDotgit'])).toBe(false);
    expect(isFsckIgnoreList('x')).toBe(false);
    expect(isFsckIgnoreList(['a b'])).toBe(false);
  });
});
