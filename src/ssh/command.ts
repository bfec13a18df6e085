import { AppError, errorMessage } from '../domain/errors.js';
import { repoIdFromUrl, type RepoId } from '../domain/repo-id.js';

/** GitService is a git command an SSH session may run. */
export type GitService = 'git-upload-pack' | 'git-receive-pack';

/** GitCommand is an accepted exec request: the service and the repository it names. */
export interface GitCommand {
  readonly service: GitService;
  readonly repoId: RepoId;
  /** write: a push (needs write access and a replica that can coordinate). */
  readonly write: boolean;
}

/** SshRefusal is a request an SSH session refuses, with the line the client is shown. */
export class SshRefusal extends AppError {
  constructor(message: string) {
    super('ERR_SSH_REFUSED', [message]);
    this.name = 'SshRefusal';
  }
}

/** ONLY_GIT is what a client that asks for anything else is told. */
export const ONLY_GIT =
  'only git-upload-pack, git-receive-pack and git-lfs-authenticate may be run over SSH (git clone, fetch, push, git lfs); no shell, no other command';

/**
 * parseGitCommand reads an exec request as git sends it: `git-upload-pack '/owner/repo.git'`
 * (ssh:// URLs) or `git-upload-pack 'owner/repo.git'` (scp-style `git@host:owner/repo.git`),
 * also `git upload-pack` and an unquoted path. Anything else, or a path that is not exactly a
 * valid `owner/repo`, is refused before anything runs: the path never reaches a shell or git's
 * argv (git runs in the replica's directory, chosen from the parsed repo id).
 */
export function parseGitCommand(command: string): GitCommand {
  if (command.length > 1024) throw new SshRefusal(ONLY_GIT);
  const m = /^git[ -](upload-pack|receive-pack) +(?:'([^']*)'|([^\s'"\\]+))$/.exec(command.trim());
  if (!m) throw new SshRefusal(ONLY_GIT);
  const service = `git-${m[1]}` as GitService;
  const path = (m[2] ?? m[3] ?? '').replace(/^\/+/, '').replace(/^~\//, '');
  const parts = path.split('/');
  if (parts.length !== 2) throw new SshRefusal(`'${truncate(path)}' is not a repository path: use owner/repo.git`);
  try {
    return { service, repoId: repoIdFromUrl(parts[0] ?? '', parts[1] ?? ''), write: service === 'git-receive-pack' };
  } catch (err) {
    throw new SshRefusal(`'${truncate(path)}' is not a repository path: ${errorMessage(err)}`);
  }
}

/** LfsAuthenticate is a `git-lfs-authenticate` request: the repository, and what git-lfs means to do. */
export interface LfsAuthenticate {
  readonly repoId: RepoId;
  readonly operation: 'upload' | 'download';
}

/**
 * parseLfsAuthenticate reads `git-lfs-authenticate <path> <upload|download>`, which git-lfs runs
 * over SSH to learn where the repository's LFS API is and with what credential; null for any
 * other command. The path is read as parseGitCommand reads git's.
 */
export function parseLfsAuthenticate(command: string): LfsAuthenticate | null {
  if (command.length > 1024) return null;
  const m = /^git-lfs-authenticate +(?:'([^']*)'|([^\s'"\\]+)) +(upload|download)$/.exec(command.trim());
  if (!m) {
    if (/^git-lfs-authenticate(?:\s|$)/.test(command.trim()))
      throw new SshRefusal('use: git-lfs-authenticate <owner>/<repo>.git upload|download');
    return null;
  }
  const path = (m[1] ?? m[2] ?? '').replace(/^\/+/, '').replace(/^~\//, '');
  const parts = path.split('/');
  if (parts.length !== 2) throw new SshRefusal(`'${truncate(path)}' is not a repository path: use owner/repo.git`);
  try {
    return { repoId: repoIdFromUrl(parts[0] ?? '', parts[1] ?? ''), operation: m[3] as 'upload' | 'download' };
  } catch (err) {
    throw new SshRefusal(`'${truncate(path)}' is not a repository path: ${errorMessage(err)}`);
  }
}

/** gitProtocolValue accepts a GIT_PROTOCOL value sent by an SSH env request (gitprotocol-v2(5)). */
export function gitProtocolValue(value: string): string | null {
  return /^[A-Za-z0-9=:.,_-]{1,256}$/.test(value) ? value : null;
}

function truncate(s: string): string {
  return s.length > 80 ? `${s.slice(0, 77)}...` : s;
}
