import type { RepoId } from '../domain/repo-id.js';
import { RECHECK_MS, type Directory } from './directory.js';
import { atLeast, decide, lower, repoRole, type Decision, type Principal, type RepoPolicy, type Role } from './policy.js';

/**
 * RepoDecision is a Decision and the incarnation of the repository it was made on: null for a
 * missing repository, undefined when no policy was read (a cluster admin's).
 */
export interface RepoDecision {
  readonly decision: Decision;
  readonly incarnation?: string | null;
}

/**
 * authorizeRepo is the one decision on a repository, for every transport (the git and REST
 * routes over HTTP, and SSH): the principal's role there by the rules of policy.ts, capped by
 * the credential's scope, turned into a Decision for `need`. `principal` null is an anonymous
 * caller; `scope` null is no cap (an SSH key acts with its user's full role).
 */
export async function authorizeRepo(
  directory: Directory,
  principal: Principal | null,
  scope: Role | null,
  repoId: RepoId,
  need: Role,
): Promise<RepoDecision> {
  // A cluster admin (uncapped, or with an admin scope) may do everything: the repo's policy
  // (and so the store) need not be read, which keeps reads working through a store outage.
  if (principal?.admin && (scope === null || scope === 'admin')) return { decision: 'allow' };
  const policy = await directory.policy(repoId);
  const first = decideOn(principal, scope, policy, need);
  // A signed-in caller's refusal is decided again on views at most RECHECK_MS old: an
  // organisation, membership or grant made a moment ago through another node lets its user in
  // at once (a push right after creating an organisation got 404 for up to a second).
  // Revocations still hold within DIRECTORY_CACHE_MS. Not when no view can change it: a token
  // whose scope is below the need, or a role that meets it but for the token's scope.
  if (first.decision === 'allow' || principal === null) return first;
  if ((scope !== null && !atLeast(scope, need)) || atLeast(repoRole(principal, policy), need)) return first;
  const [fresh, again] = await Promise.all([
    directory.principal({ name: principal.user, admin: principal.admin }, RECHECK_MS),
    directory.policy(repoId, RECHECK_MS),
  ]);
  return decideOn(fresh, scope, again, need);
}

/** decideOn is one decision on given views: the principal's role by policy.ts, capped by the scope. */
function decideOn(
  p: Principal | null,
  scope: Role | null,
  policy: RepoPolicy & { readonly incarnation: string | null },
  need: Role,
): RepoDecision {
  const role = repoRole(p, policy);
  const capped = p === null || scope === null ? role : lower(role, scope);
  return { decision: decide(capped, need, p !== null), incarnation: policy.incarnation };
}

/** Decided is one access decision that allowed git work: who, with what cap, on which incarnation. */
export interface Decided {
  readonly principal: Principal | null;
  readonly scope: Role | null;
  readonly repoId: RepoId;
  readonly need: Role;
  /** incarnation is what the decision was made on (RepoDecision's): undefined when no policy was read. */
  readonly incarnation: string | null | undefined;
}

/**
 * decideFor checks a decision against the incarnation the git work actually reaches: a push's
 * repository under its lock, a fetch's replica once it holds its git slot. The policy a decision
 * read may be up to a second old (Directory's cache), and the repository it allowed may have been
 * deleted and created again since: then access is decided again on a fresh policy, and allowed
 * only for the repository as it is now (a former writer's stale view is refused, the owner's own
 * push right after a re-create is not). A cluster admin's decision read no policy and holds.
 */
export async function decideFor(directory: Directory, d: Decided, reached: string | null): Promise<Decision> {
  if (d.incarnation === undefined || d.incarnation === reached) return 'allow';
  directory.forgetPolicy(d.repoId);
  const again = await authorizeRepo(directory, d.principal, d.scope, d.repoId, d.need);
  if (again.decision !== 'allow') return again.decision;
  return again.incarnation === undefined || again.incarnation === reached ? 'allow' : 'not_found';
}

/**
 * refusalFor is decideFor's answer as the reason a git client is given (null: allowed), for work
 * that learns the incarnation it reaches after its request was answered 200 (a push's ref
 * updates, reported per ref).
 */
export async function refusalFor(directory: Directory, d: Decided, reached: string | null): Promise<string | null> {
  const decision = await decideFor(directory, d, reached);
  return decision === 'allow' ? null : deniedMessage(decision, d.repoId, d.need);
}

/**
 * deniedMessage is what every transport says of a refused decision: read without write (or
 * write without admin) is "permission denied"; anything else hides the repository. (HTTP's 401,
 * which asks git for credentials, is the one answer with words of its own: access.ts.)
 */
export function deniedMessage(decision: Exclude<Decision, 'allow'>, repoId: RepoId, need: Role): string {
  return decision === 'forbidden' ? `permission denied: ${need} access to ${repoId} needed` : `repository ${repoId} not found`;
}
