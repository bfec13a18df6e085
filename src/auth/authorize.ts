import type { RepoId } from '../domain/repo-id.js';
import type { Directory } from './directory.js';
import { decide, lower, repoRole, type Decision, type Principal, type Role } from './policy.js';

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
): Promise<Decision> {
  // A cluster admin (uncapped, or with an admin scope) may do everything: the repo's policy
  // (and so the store) need not be read, which keeps reads working through a store outage.
  if (principal?.admin && (scope === null || scope === 'admin')) return 'allow';
  const policy = await directory.policy(repoId);
  if (principal === null) return decide(repoRole(null, policy), need, false);
  const role = repoRole(principal, policy);
  return decide(scope === null ? role : lower(role, scope), need, true);
}
