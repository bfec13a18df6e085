import { badRequest } from './errors.js';

const PART = /^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$/;

/**
 * RESERVED_OWNERS are the first path segments of the node's own routes: an owner by one of these
 * names would put its repositories' URLs beside (or under) the API's.
 */
export const RESERVED_OWNERS: ReadonlySet<string> = new Set([
  'admin',
  'api',
  'health',
  'internal',
  'metrics',
  'ready',
  'replicate',
  'repos',
]);

/** RepoId is a validated `owner/name`. */
export type RepoId = string & { readonly __brand: 'RepoId' };

/** validateRepoPart says why one half of a repo id is invalid, or returns null. */
function partProblem(part: string, what: string): string | null {
  if (!PART.test(part)) {
    return `${what} must be 1-100 characters of A-Z a-z 0-9 . _ - starting with a letter or digit`;
  }
  if (part.includes('..')) return `${what} must not contain '..'`;
  if (part.toLowerCase().endsWith('.git')) return `${what} must not end in '.git'`;
  if (part.toLowerCase().endsWith('.lock')) return `${what} must not end in '.lock'`;
  return null;
}

/** parseRepoId validates `owner/name` (DESIGN §9) and throws a 400 AppError when it is not one. */
export function parseRepoId(value: unknown): RepoId {
  if (typeof value !== 'string') throw badRequest('repo_id must be a string of the form owner/name');
  const parts = value.split('/');
  if (parts.length !== 2) throw badRequest(`invalid repo id '${truncate(value)}': must be owner/name`);
  const [owner, name] = parts as [string, string];
  const problem = partProblem(owner, 'owner') ?? partProblem(name, 'name');
  if (problem) throw badRequest(`invalid repo id '${truncate(value)}': ${problem}`);
  if (RESERVED_OWNERS.has(owner.toLowerCase())) throw badRequest(`invalid repo id '${truncate(value)}': owner '${owner}' is reserved`);
  return value as RepoId;
}

/** repoIdFromUrl parses the owner and repo segments of a git URL, with or without `.git`. */
export function repoIdFromUrl(owner: string, repo: string): RepoId {
  const name = repo.endsWith('.git') ? repo.slice(0, -4) : repo;
  return parseRepoId(`${owner}/${name}`);
}

function truncate(s: string): string {
  return s.length > 60 ? `${s.slice(0, 57)}...` : s;
}
