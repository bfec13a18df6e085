import { createHash } from 'node:crypto';

/**
 * placeReplicas picks the replica set of a repo by rendezvous (highest-random-weight) hashing:
 * every node gets a score from hash(repo, node) and the `count` highest win. Adding or removing
 * a node moves only the repos whose set contained it (DESIGN §8).
 */
export function placeReplicas(repoId: string, nodeIds: readonly string[], count: number): string[] {
  return [...nodeIds]
    .map((id) => ({ id, score: createHash('sha256').update(`${repoId}\0${id}`).digest().readBigUInt64BE(0) }))
    .sort((a, b) => (a.score === b.score ? a.id.localeCompare(b.id) : a.score > b.score ? -1 : 1))
    .slice(0, count)
    .map((s) => s.id);
}
