import { SEALED_CURSOR_PREFIX } from '../auth/peer-signature.js';
import { repoRole, type Principal } from '../auth/policy.js';
import { badRequest } from '../domain/errors.js';
import type { RepoRecord } from '../store/types.js';
import type { Directory } from '../auth/directory.js';
import type { NodeDeps } from './deps.js';

/** PolicyOf reads a repo's access policy (Directory.policies). */
type PolicyOf = Awaited<ReturnType<Directory['policies']>>;

/** MAX_SCAN_PAGES bounds the store pages one listing answer reads looking for repos the caller may see. */
export const MAX_SCAN_PAGES = 5;

/** VisiblePage is one page of a listing: the repos the caller may read, and where the next page starts (null: none). */
export interface VisiblePage {
  readonly visible: Array<{ repo: RepoRecord; visibility: string }>;
  readonly next: string | null;
}

/**
 * cursorOf reads a listing's `cursor`: one this cluster sealed (openCursor), or the id of a
 * repo the caller may read; anything else is a 400. A listing's answer says whether records
 * follow its scan (next_cursor null or not); from a position of the caller's choosing, that
 * told how many hidden repos sort after it, and a binary search over positions spelled out
 * their names (a review recovered one in 47 requests). From a repo the caller reads, the start,
 * or where an earlier scan stopped, it tells counts only.
 */
function cursorOf(deps: NodeDeps, principal: Principal | null, policyOf: PolicyOf, given: string | undefined): string {
  if (!given) return '';
  if (given.startsWith(SEALED_CURSOR_PREFIX)) {
    const cursor = deps.hops.openCursor(given);
    if (cursor === null) throw badRequest('cursor is not one this cluster made');
    return cursor;
  }
  if (repoRole(principal, policyOf(given)) === null)
    throw badRequest("cursor must be a repository you may read, or a listing's next_cursor");
  return given;
}

/**
 * visibleRepos reads one page of the repos the caller may read, by id after the `given` cursor
 * (cursorOf): store
 * pages of `limit + 1` records (one more tells whether a next page exists), at most
 * MAX_SCAN_PAGES of them, so an answer costs reads for what it shows, not for every repo (an
 * anonymous `GET /repos?limit=1` read every record of the cluster, two at a time). A caller who
 * may read few of many repos gets a short page and a `next` cursor where the scan stopped,
 * sealed (HopTokens.sealCursor): that repo may be one the caller may not see, and its name was
 * the answer's to anyone who asked (an outside review read every tenth private name off
 * `/status.json`'s cursors).
 */
export async function visibleRepos(
  deps: NodeDeps,
  principal: Principal | null,
  given: string | undefined,
  limit: number,
): Promise<VisiblePage> {
  const policyOf = await deps.directory.policies();
  const visible: Array<{ repo: RepoRecord; visibility: string }> = [];
  let after = cursorOf(deps, principal, policyOf, given);
  for (let pages = 0; pages < MAX_SCAN_PAGES; pages++) {
    const batch = await deps.store.listReposPage(after, limit + 1);
    for (const repo of batch) {
      const policy = policyOf(repo.repoId);
      if (repoRole(principal, policy) === null) continue;
      if (visible.length === limit) return { visible, next: visible[limit - 1]!.repo.repoId };
      visible.push({ repo, visibility: policy.visibility });
    }
    if (batch.length <= limit) return { visible, next: null };
    after = batch[batch.length - 1]!.repoId;
  }
  return { visible, next: deps.hops.sealCursor(after) };
}
