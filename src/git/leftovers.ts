import { readdirSync, rmSync, unlinkSync, type Dirent } from 'node:fs';
import { join } from 'node:path';

/** TOP_LEVEL_LEFTOVERS are the lock and temporary files git leaves at a repo's top when it dies. */
const TOP_LEVEL_LEFTOVERS = new Set(['packed-refs.lock', 'packed-refs.new', 'HEAD.lock', 'config.lock', 'shallow.lock']);

function entries(dir: string): Dirent[] {
  try {
    return readdirSync(dir, { withFileTypes: true });
  } catch {
    return [];
  }
}

function unlinkQuietly(path: string): boolean {
  try {
    unlinkSync(path);
    return true;
  } catch {
    return false;
  }
}

/** removeRefLocks deletes every `*.lock` under a refs directory; returns how many went. */
function removeRefLocks(dir: string): number {
  let n = 0;
  for (const e of entries(dir)) {
    const p = join(dir, e.name);
    if (e.name.endsWith('.lock')) n += unlinkQuietly(p) ? 1 : 0;
    else if (e.isDirectory()) n += removeRefLocks(p);
  }
  return n;
}

/**
 * removeLockFiles deletes the lock files a git process killed by a signal leaves in a replica
 * (ref `*.lock`, `packed-refs.lock`, `HEAD.lock`, ...): left, every later ref update there
 * fails with "File exists". Safe only while no other git process writes the replica's refs
 * (its repair activity excludes transactions). Returns how many went.
 */
export function removeLockFiles(root: string): number {
  let removed = 0;
  for (const e of entries(root)) if (TOP_LEVEL_LEFTOVERS.has(e.name) && unlinkQuietly(join(root, e.name))) removed++;
  return removed + removeRefLocks(join(root, 'refs'));
}

/** sweepReplica removes one replica's leftovers, sparing the paths in `keep`; returns how many went. */
function sweepReplica(root: string, keep: ReadonlySet<string>): number {
  let removed = removeLockFiles(root);
  const objects = join(root, 'objects');
  for (const e of entries(objects)) {
    if (e.name.startsWith('tmp_objdir-incoming-') || e.name.startsWith('incoming-')) {
      rmSync(join(objects, e.name), { recursive: true, force: true });
      removed++;
    }
  }
  const packDir = join(objects, 'pack');
  for (const e of entries(packDir)) {
    const p = join(packDir, e.name);
    if (((e.name.endsWith('.keep') && !keep.has(p)) || e.name.startsWith('tmp_')) && unlinkQuietly(p)) removed++;
  }
  return removed;
}

/**
 * sweepLeftovers deletes what dead git processes leave behind in every replica under
 * `reposDir` (`<owner>/<name>.git`), I5: ref `*.lock` files, `packed-refs.new`, quarantine
 * directories, pack `.keep` and `tmp_` files; and everything in `tmpDir`; except the paths in
 * `keep` (transactions still in doubt). It returns how many replica files went. Safe only at
 * start, before any git process of this node runs. Synchronous on purpose: nothing else runs
 * yet, and a few direct system calls per replica cost about a tenth of the same calls made
 * through the thread pool one `await` at a time (docs/SCALE.md: 3,000 replicas, 1 s instead
 * of 5–7 s on a loaded 2-core machine).
 */
export function sweepLeftovers(reposDir: string, tmpDir: string, keep: readonly string[]): number {
  const keepSet = new Set(keep);
  let removed = 0;
  for (const owner of entries(reposDir)) {
    if (!owner.isDirectory()) continue;
    for (const repo of entries(join(reposDir, owner.name))) {
      if (repo.isDirectory() && repo.name.endsWith('.git')) removed += sweepReplica(join(reposDir, owner.name, repo.name), keepSet);
    }
  }
  for (const e of entries(tmpDir)) {
    const p = join(tmpDir, e.name);
    if (!keepSet.has(p)) rmSync(p, { recursive: true, force: true });
  }
  return removed;
}
