/**
 * refNameProblem applies git's check-ref-format rules (git-check-ref-format(1)) to a ref a client
 * wants to update and returns why it is invalid, or null. The proc-receive hook hands over names
 * unvalidated, so the node must refuse them itself.
 */
export function refNameProblem(name: string): string | null {
  if (!name.startsWith('refs/')) return 'funny refname';
  if (name.length > 1024) return 'funny refname';
  if (name.endsWith('/') || name.includes('//')) return 'funny refname';
  if (name.endsWith('.')) return 'funny refname';
  if (name.includes('..') || name.includes('@{') || name === '@') return 'funny refname';
  for (let i = 0; i < name.length; i++) {
    const c = name.charCodeAt(i);
    if (c < 0x20 || c === 0x7f) return 'funny refname';
  }
  if (/[ ~^:?*[\\]/.test(name)) return 'funny refname';
  for (const part of name.split('/')) {
    if (part.length === 0 || part.startsWith('.') || part.endsWith('.lock')) return 'funny refname';
  }
  return null;
}

/** ZERO_OID is git's all-zero object id (SHA-1), meaning "no such ref". */
export const ZERO_OID = '0000000000000000000000000000000000000000';

const OID = /^[0-9a-f]{40}([0-9a-f]{24})?$/;

/** isOid says whether a string is a full lowercase hex object id. */
export function isOid(value: string): boolean {
  return OID.test(value);
}

/** isZeroOid says whether an oid means "absent". */
export function isZeroOid(oid: string): boolean {
  return /^0+$/.test(oid);
}
