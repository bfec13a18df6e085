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

/** MAX_REF_COMPONENTS bounds the slash-separated parts of a ref name a push may set. */
export const MAX_REF_COMPONENTS = 32;

/**
 * refDepthProblem says why a push may not set a ref of this name beyond git's rules, or null:
 * each component is a directory on every replica, and 200 refs of 500 components each made
 * 100,000 directories per replica (git has no limit; this one is far above any naming scheme).
 * A ref that exists already may still be deleted.
 */
export function refDepthProblem(name: string): string | null {
  return name.split('/').length > MAX_REF_COMPONENTS ? `ref name has more than ${MAX_REF_COMPONENTS} components` : null;
}

/** RefUpdate is one ref change, as git's commands say it: a zero oid on either side means create or delete. */
export interface RefUpdate {
  readonly ref: string;
  readonly oldOid: string;
  readonly newOid: string;
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

/**
 * refConflict says why creating `ref` would clash with an existing ref in git's file layout (a
 * ref cannot also be a directory of refs: `refs/heads/main` and `refs/heads/main/sub`), in
 * git's words, or null. `refs` holds the names that will exist besides the new one; `dirs` every
 * proper directory prefix of them (`refs/heads/main/`), from refDirectories.
 */
export function refConflict(ref: string, refs: ReadonlySet<string>, dirs: ReadonlySet<string>): string | null {
  if (dirs.has(`${ref}/`)) {
    return `cannot lock ref '${ref}': there is a ref below it; cannot create '${ref}'`;
  }
  for (let i = ref.indexOf('/', 'refs/'.length); i !== -1; i = ref.indexOf('/', i + 1)) {
    const parent = ref.slice(0, i);
    if (refs.has(parent)) return `cannot lock ref '${ref}': '${parent}' exists; cannot create '${ref}'`;
  }
  return null;
}

/** refDirectories lists every proper directory prefix (`a/b/` of `a/b/c`) of the given ref names. */
export function refDirectories(refs: Iterable<string>): Set<string> {
  const dirs = new Set<string>();
  for (const r of refs) {
    for (let i = r.indexOf('/'); i !== -1; i = r.indexOf('/', i + 1)) dirs.add(r.slice(0, i + 1));
  }
  return dirs;
}
