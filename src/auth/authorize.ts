import type { RepoId } from '../domain/repo-id.js';
import type { Directory } from './directory.js';
import { decide, lower, repoRole, type Decision, type Principal, type Role } from './policy.js';

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
  const role = principal === null ? repoRole(null, policy) : repoRole(principal, policy);
  const capped = principal === null || scope === null ? role : lower(role, scope);
  return { decision: decide(capped, need, principal !== null), incarnation: policy.incarnation };
}
