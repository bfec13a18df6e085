/**
 * The git configuration of the two services clients call, shared by every transport (smart HTTP
 * and SSH), so a push or a fetch runs the same way whichever way it came in.
 */

import { unavailable } from '../domain/errors.js';
import { fsckConfig } from './fsck-policy.js';
import { linksState, noteShallow } from './repo-storage.js';
import { ShallowWatch } from './shallow-watch.js';
import { NO_DWIM } from './update-ref.js';

/**
 * UPLOAD_PACK_CONFIG caps what the pack-objects under upload-pack maps of the packs it reads (git's
 * defaults map up to 8 GiB in 1 GiB windows): a clone of a 200 MiB pack then peaks at about 55 MB
 * RSS instead of the pack's size. The settings reach pack-objects through git's environment.
 */
export const UPLOAD_PACK_CONFIG: Readonly<Record<string, string>> = {
  'core.packedGitWindowSize': '16m',
  'core.packedGitLimit': '64m',
  // A partial clone on protocol v0/v1 fetches the blobs it filtered out later by id: they must
  // be allowed in wants when reachable from a ref (v2 allows that by itself).
  'uploadpack.allowFilter': 'true',
  'uploadpack.allowReachableSHA1InWant': 'true',
  // pack-objects reads the wants as revisions: no lookup of a ref named like each.
  ...NO_DWIM,
};

/**
 * receivePackConfig runs receive-pack with the node's proc-receive hook for every ref (it hands
 * the updates to the coordinator), one pack per push kept as sent, and the push size limit.
 */
export function receivePackConfig(hooksDir: string, maxPushBytes: number, fsckIgnore: readonly string[]): Record<string, string> {
  return {
    'core.hooksPath': hooksDir,
    'receive.procReceiveRefs': 'refs/',
    'receive.unpackLimit': '1',
    'receive.maxInputSize': String(maxPushBytes),
    // No `git gc --auto` after each push: the replica config already turns it off (gc.auto=0),
    // so it would only be one more process the client waits for; maintenance repacks instead.
    'receive.autogc': 'false',
    // The connectivity rev-list reads each new tip as a revision: no lookup of a ref named like it.
    ...NO_DWIM,
    // That rev-list also takes the refs of every alternate as known tips (--alternate-refs), and
    // the quarantine's one alternate is this same repo, whose refs it has already (--all): git
    // would start `git for-each-ref` on it for every push. `true` answers no more tips.
    'core.alternateRefsCommand': 'true',
    ...fsckConfig('receive', fsckIgnore),
  };
}

/** receivePackEnv tells the proc-receive relay where the node's hook socket is and which push it serves. */
export function receivePackEnv(hookPort: number, pushId: string): Record<string, string> {
  return { GIT_REPLICATION_HOOK_PORT: String(hookPort), GIT_REPLICATION_PUSH_ID: pushId };
}

/** PUSH_COMMANDS_BYTES bounds the pkt-lines before a push's pack (its commands and push options; 100,000 refs fit), over HTTP and SSH. */
export const PUSH_COMMANDS_BYTES = 32 * 1024 * 1024;

/**
 * SHALLOW_LOOKUPS_MAX is the most `shallow` lines of one push looked up in the replica
 * (noteShallow reads each pack's index in place, on the node's one thread); past it the replica
 * is marked LINKS_UNCHECKED without more lookups. A shallow clone names one line per
 * shallow commit; a flood of them costs the node at most this many lookups.
 */
export const SHALLOW_LOOKUPS_MAX = 1_000;

/**
 * watchShallow is the watch every push's input passes through on its way to receive-pack (over
 * HTTP and SSH): each `shallow` line is noted on the replica at `repoPath` (noteShallow) before
 * receive-pack reads it, until the replica is marked LINKS_UNCHECKED (nothing more to note). A
 * note that cannot be written fails the push.
 */
export function watchShallow(repoPath: string): ShallowWatch {
  let lines = 0;
  let done = false;
  return new ShallowWatch((oid) => {
    if (done) return;
    try {
      noteShallow(repoPath, ++lines > SHALLOW_LOOKUPS_MAX ? null : oid);
    } catch (err) {
      // The errno's code only: the message names the server's paths.
      throw unavailable(
        `the replica could not note a push from a shallow clone (${(err as NodeJS.ErrnoException).code ?? 'write failed'}), try again`,
      );
    }
    done = linksState(repoPath) === 'unchecked';
  });
}
