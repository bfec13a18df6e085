import { isZeroOid, refConflict, refDirectories, ZERO_OID, type RefUpdate } from '../domain/ref-name.js';
import { refKey, type PushCommand } from '../git/proc-receive.js';

/**
 * A group commit: the pushes that queue on one repo while a transaction of it runs on this node
 * join the next transaction together (one lock, one prepare, one decision and one commit for all
 * of them), each keeping its own per-ref results and its own `--atomic`.
 */

/** GroupMember is one push of a group, as mergeGroup sees it. */
export interface GroupMember {
  /** commands still to decide (those refused earlier, e.g. a bad name, left out). */
  readonly commands: readonly PushCommand[];
  /** atomic: the push asked for all or nothing (`git push --atomic`). */
  readonly atomic: boolean;
  /** fail records the refusal of one command, by its key. */
  fail(key: string, reason: string): void;
  /** refused says whether any command of the push was refused so far. */
  refused(): boolean;
}

/** MergedGroup is what a group's transaction applies. */
export interface MergedGroup {
  /** batches: each member's accepted updates, in the group's order (empty: nothing of it applies). */
  readonly batches: readonly RefUpdate[][];
  /** net: the group's updates from the refs before it to the refs after it, one per ref that changes. */
  readonly net: readonly RefUpdate[];
}

/**
 * mergeGroup checks each member's commands, in arrival order, against the refs as the members
 * before it leave them (so two pushes of one branch behave as if they ran one after the other:
 * the second gets "fetch first" unless it builds on the first), and folds the accepted updates
 * into one net update per ref. An atomic member with a refused command applies nothing.
 */
export function mergeGroup(current: ReadonlyMap<string, string>, head: string | null, members: readonly GroupMember[]): MergedGroup {
  const refs = new Map(current);
  const net = new Map<string, RefUpdate>();
  const batches: RefUpdate[][] = [];
  for (const m of members) {
    const batch = checkCommands(m.commands, refs, head, (key, reason) => m.fail(key, reason));
    if (m.atomic && m.refused()) {
      batches.push([]);
      continue;
    }
    batches.push(batch);
    for (const u of batch) {
      if (isZeroOid(u.newOid)) refs.delete(u.ref);
      else refs.set(u.ref, u.newOid);
      const before = net.get(u.ref);
      net.set(u.ref, before ? { ref: u.ref, oldOid: before.oldOid, newOid: u.newOid } : u);
    }
  }
  // A ref a later push of the group put back where it was does not change.
  return { batches, net: [...net.values()].filter((u) => u.oldOid !== u.newOid) };
}

/**
 * checkCommands compares a push's commands with the replica's refs under the lock and returns
 * the batch to replicate; the others get git's own reasons: `fetch first` (old value moved),
 * `already exists`, `no such ref`, `deletion of the current branch prohibited` (the branch HEAD
 * names, as receive.denyDeleteCurrent), and a directory/file clash with another ref.
 */
export function checkCommands(
  commands: readonly PushCommand[],
  current: ReadonlyMap<string, string>,
  head: string | null,
  fail: (key: string, reason: string) => void,
): RefUpdate[] {
  const batch: RefUpdate[] = [];
  for (const c of commands) {
    const have = current.get(c.ref) ?? ZERO_OID;
    if (have !== c.oldOid) fail(c.key, isZeroOid(c.oldOid) ? 'already exists' : 'fetch first');
    else if (isZeroOid(c.newOid) && have === ZERO_OID) fail(c.key, 'no such ref');
    else if (isZeroOid(c.newOid) && c.ref === head) fail(c.key, 'deletion of the current branch prohibited');
    else batch.push({ ref: c.ref, oldOid: c.oldOid, newOid: c.newOid });
  }
  // Refs after the batch: a delete in the same push frees its name (as in one git transaction).
  const after = new Set(current.keys());
  for (const u of batch) {
    if (isZeroOid(u.newOid)) after.delete(u.ref);
    else after.add(u.ref);
  }
  const dirs = refDirectories(after);
  return batch.filter((u) => {
    const clash = isZeroOid(u.oldOid) && !isZeroOid(u.newOid) ? refConflict(u.ref, after, dirs) : null;
    if (clash) fail(refKey(u.ref), clash);
    return clash === null;
  });
}
