import { randomUUID } from 'node:crypto';
import type { ChildProcess } from 'node:child_process';
import type { Readable } from 'node:stream';
import ssh2 from 'ssh2';
import { type ServerChannel } from 'ssh2';
import type { AuditLog } from '../auth/audit.js';
import { authorizeRepo, deniedMessage, refusalFor, type Decided } from '../auth/authorize.js';
import type { Directory } from '../auth/directory.js';
import { signSshHop } from '../auth/peer-signature.js';
import { AppError, errorMessage } from '../domain/errors.js';
import type { Logger } from '../domain/logger.js';
import type { Metrics } from '../metrics.js';
import type { HookServer } from '../git/proc-receive.js';
import { PktLineValidator } from '../git/pkt-line.js';
import type { ReplicaStorage } from '../git/repo-storage.js';
import { terminate, waitClose, type GitRunner } from '../git/runner.js';
import { PUSH_COMMANDS_BYTES, receivePackConfig, receivePackEnv, UPLOAD_PACK_CONFIG, watchShallow } from '../git/services.js';
import type { ShallowWatch } from '../git/shallow-watch.js';
import type { RepoActivity } from '../replication/activity.js';
import type { Coordinator } from '../replication/coordinator.js';
import { chain } from '../http/body-guards.js';
import { PackTap } from '../replication/pack-tee.js';
import type { Router } from '../replication/router.js';
import { parseGitCommand, SshRefusal, type GitCommand, type LfsAuthenticate } from './command.js';
import { LFS_TICKET_MS, signLfsTicket } from '../auth/lfs-ticket.js';

// ssh2 is CommonJS: its named exports are read from the default export.
const { Client } = ssh2;

/** SshIdentity is who an SSH connection signed in as. */
export interface SshIdentity {
  readonly user: string;
  /** keyName names the key (for the audit log); for a proxied session, the key used at the first node. */
  readonly keyName: string;
  /** client is the address the first node saw. */
  readonly client: string;
  /** hop: a session another node proxied here; it is never proxied again. */
  readonly hop: boolean;
  /** key is the public key the user signed in with (not for a hop): each command finds it registered still. */
  readonly key?: Buffer;
}

/** SessionDeps is what an SSH session needs of the node. */
export interface SessionDeps {
  readonly logger: Logger;
  readonly metrics: Metrics;
  readonly git: GitRunner;
  readonly storage: ReplicaStorage;
  readonly router: Router;
  readonly directory: Directory;
  readonly hooks: HookServer;
  readonly hookPort: number;
  readonly coordinator: Coordinator;
  readonly activity: RepoActivity;
  readonly audit: AuditLog;
  readonly hooksDir: string;
  readonly maxPushBytes: number;
  /** fsckIgnore is the cluster's fsck policy (git/fsck-policy.ts). */
  readonly fsckIgnore: readonly string[];
  /** gitTimeoutMs kills a git process that runs longer. */
  readonly gitTimeoutMs: number;
  readonly secret: string;
  /** hostKeyBlob is the cluster's public host key: a peer must present it. */
  readonly hostKeyBlob: Buffer;
  /** httpUrl is this node's HTTP URL (its advertised one), where git-lfs-authenticate sends git-lfs. */
  readonly httpUrl: string;
  /** peerSsh finds a peer's SSH endpoint (null: it runs no SSH server). */
  readonly peerSsh: (nodeId: string) => Promise<{ host: string; port: number } | null>;
}

/** SessionHooks let the connection see activity (idle time-out) and a push being decided. */
export interface SessionHooks {
  readonly touch: () => void;
  /** busy marks a push in the coordinator: no channel data flows, yet the session is not idle. */
  readonly busy: (on: boolean) => void;
  /** onIdle, when given, registers what ends this channel's command once the channel is idle (channelActivity). */
  readonly onIdle?: (end: () => void) => void;
}

/**
 * channelActivity is one channel's own idle time-out over the connection's hooks: a channel
 * without data either way for `idleMs`, and no push of it being decided, has its command ended
 * (its git process killed) and is closed, whatever the connection's other channels do. (Before,
 * one channel trickling a byte kept the connection's other channels, and their git processes,
 * for up to the session time.) `stop` ends the watch.
 */
export function channelActivity(
  connection: SessionHooks,
  idleMs: number,
  onIdleEnd: () => void,
): { readonly hooks: SessionHooks; readonly stop: () => void } {
  let last = Date.now();
  let busy = 0;
  let end: (() => void) | null = null;
  const timer = setInterval(
    () => {
      if (busy > 0 || Date.now() - last <= idleMs) return;
      clearInterval(timer);
      end?.();
      onIdleEnd();
    },
    Math.min(5_000, Math.max(100, Math.floor(idleMs / 4))),
  );
  timer.unref();
  return {
    hooks: {
      touch: () => {
        last = Date.now();
        connection.touch();
      },
      busy: (on) => {
        busy += on ? 1 : -1;
        last = Date.now();
        connection.busy(on);
      },
      onIdle: (f) => {
        end = f;
      },
    },
    stop: () => clearInterval(timer),
  };
}

/** refuse tells the client why in one stderr line and ends the channel with exit status 1; nothing ran. */
export function refuse(channel: ServerChannel, message: string): void {
  try {
    channel.stderr.write(`git-replication: ${message}\n`);
    channel.exit(1);
    channel.end();
  } catch {
    // the client is gone already
  }
}

/**
 * runGitCommand serves one exec request: parse it, decide with the one authorisation function
 * (as over HTTP), route it like an HTTP request (the local replica when in sync, else an in-sync
 * peer, to which the whole session is proxied), then run git in full-duplex mode over the
 * channel. Every refusal is a message and exit status 1, with nothing run.
 */
export async function runGitCommand(
  deps: SessionDeps,
  channel: ServerChannel,
  id: SshIdentity,
  command: string,
  gitProtocol: string | null,
  hooks: SessionHooks,
): Promise<void> {
  const started = Date.now();
  // Labels stay few: a command that does not parse counts as `other`.
  let service = 'other';
  let outcome: 'ok' | 'failed' | 'refused' | 'proxied' | 'cut' = 'refused';
  try {
    const cmd = parseGitCommand(command);
    service = cmd.service;
    const user = await deps.directory.user(id.user);
    if (!user || user.disabled) throw new SshRefusal(`user ${id.user} is disabled`);
    const principal = await deps.directory.principal(user);
    const need = cmd.write ? 'write' : 'read';
    const { decision, incarnation } = await authorizeRepo(deps.directory, principal, null, cmd.repoId, need);
    // The same answers as HTTP's: no read access hides the repository; read without write is 403's message.
    if (decision !== 'allow') throw new SshRefusal(deniedMessage(decision, cmd.repoId, need));
    const route = await deps.router.route(cmd.repoId, cmd.write);
    if (route.kind === 'peer' && !(id.hop && (await deps.router.waitLocal(cmd.repoId, cmd.write)))) {
      if (id.hop) throw new SshRefusal(`replica of ${cmd.repoId} on this node is not in sync, try again`);
      await proxySession(deps, channel, id, cmd, gitProtocol, route.nodeId, hooks);
      outcome = 'proxied';
      return;
    }
    const decided: Decided = { principal, scope: null, repoId: cmd.repoId, need, incarnation };
    const code = cmd.write
      ? await servePush(deps, channel, id, cmd, hooks, decided)
      : await serveGit(deps, channel, cmd, id, await spawnUploadPack(deps, channel, cmd, id, gitProtocol, decided), hooks);
    outcome = code === null ? 'cut' : code === 0 ? 'ok' : 'failed';
  } catch (err) {
    if (!(err instanceof AppError)) deps.logger.error({ err: errorMessage(err), command }, 'ssh session failed');
    refuse(channel, err instanceof AppError ? err.message : 'internal error');
  } finally {
    deps.metrics.sshCommands.inc({ service, outcome });
    deps.metrics.sshCommandSeconds.observe({ service }, (Date.now() - started) / 1000);
  }
}

/**
 * runLfsAuthenticate answers `git-lfs-authenticate <repo> <upload|download>` (git-lfs over an SSH
 * remote): decided as a fetch (download) or a push (upload) over SSH would be, it prints where
 * the repository's LFS API is over HTTP (this node's URL) and a ticket for it (lfs-ticket.ts),
 * good for that repository's LFS API only, at that access, for LFS_TICKET_MS. Nothing is stored.
 */
export async function runLfsAuthenticate(
  deps: SessionDeps,
  channel: ServerChannel,
  id: SshIdentity,
  request: LfsAuthenticate,
): Promise<void> {
  let outcome: 'ok' | 'refused' = 'refused';
  try {
    const user = await deps.directory.user(id.user);
    if (!user || user.disabled) throw new SshRefusal(`user ${id.user} is disabled`);
    const principal = await deps.directory.principal(user);
    const need = request.operation === 'upload' ? 'write' : 'read';
    const { decision } = await authorizeRepo(deps.directory, principal, null, request.repoId, need);
    if (decision !== 'allow') throw new SshRefusal(deniedMessage(decision, request.repoId, need));
    const expiresAt = Date.now() + LFS_TICKET_MS;
    const ticket = signLfsTicket(deps.secret, { user: id.user, repoId: request.repoId, need, keyName: id.keyName, expiresAt });
    const answer = {
      href: `${deps.httpUrl}/${request.repoId}.git/info/lfs`,
      header: { Authorization: `Bearer ${ticket}` },
      expires_in: Math.floor(LFS_TICKET_MS / 1000) - 30,
    };
    channel.write(`${JSON.stringify(answer)}\n`);
    channel.exit(0);
    channel.end();
    outcome = 'ok';
  } catch (err) {
    if (!(err instanceof AppError)) deps.logger.error({ err: errorMessage(err) }, 'git-lfs-authenticate failed');
    refuse(channel, err instanceof AppError ? err.message : 'internal error');
  } finally {
    deps.metrics.sshCommands.inc({ service: 'git-lfs-authenticate', outcome });
  }
}

/**
 * slotFor takes a git process slot for the session's client, waiting in line for one
 * (GitRunner.acquire), as HTTP's requests do; a channel that closes meanwhile leaves the line.
 */
async function slotFor(deps: SessionDeps, channel: ServerChannel, client: string): Promise<() => void> {
  const gone = new AbortController();
  const onClose = (): void => gone.abort();
  if (channel.destroyed) gone.abort();
  else channel.once('close', onClose);
  try {
    return await deps.git.acquire(client, gone.signal);
  } finally {
    channel.off('close', onClose);
  }
}

/**
 * servingSlot takes a git slot (slotFor) for serving the local replica, and checks the session's
 * access against the replica git will read: the decision was made before the slot's wait,
 * perhaps on a policy of a repository deleted and created again since (decideFor, as over HTTP).
 */
async function servingSlot(deps: SessionDeps, channel: ServerChannel, client: string, decided: Decided): Promise<() => void> {
  const slot = await slotFor(deps, channel, client);
  try {
    const refused = await refusalFor(deps.directory, decided, await deps.storage.incarnationOf(decided.repoId));
    if (refused !== null) throw new SshRefusal(refused);
    return slot;
  } catch (err) {
    slot();
    throw err;
  }
}

/** spawnUploadPack starts upload-pack once a git slot is free for the client (it may wait in line). */
async function spawnUploadPack(
  deps: SessionDeps,
  channel: ServerChannel,
  cmd: GitCommand,
  id: SshIdentity,
  gitProtocol: string | null,
  decided: Decided,
): Promise<ChildProcess> {
  const slot = await servingSlot(deps, channel, id.client, decided);
  return deps.git.spawn(['upload-pack', '.'], {
    cwd: deps.storage.repoPath(cmd.repoId),
    config: { ...UPLOAD_PACK_CONFIG },
    env: gitProtocol ? { GIT_PROTOCOL: gitProtocol } : {},
    slot,
    timeoutMs: deps.gitTimeoutMs,
  });
}

/**
 * servePush runs receive-pack exactly as the HTTP route does (the upload registered on the
 * replica, the proc-receive hook handing the updates to the coordinator: same transaction,
 * quorum, lock and messages). An abandoned push (outcome unknown) closes the channel without an
 * exit status, so the client reports a cut-off answer, never a result.
 */
async function servePush(
  deps: SessionDeps,
  channel: ServerChannel,
  id: SshIdentity,
  cmd: GitCommand,
  hooks: SessionHooks,
  decided: Decided,
): Promise<number | null> {
  const pushId = randomUUID();
  // Checked before receive-pack advertises the refs (and under the repository's lock again, refusalFor).
  const slot = await servingSlot(deps, channel, id.client, decided);
  let endUpload: () => void;
  try {
    endUpload = await deps.activity.beginUpload(cmd.repoId);
  } catch (err) {
    slot();
    throw err;
  }
  try {
    const child = deps.git.spawn(['receive-pack', '.'], {
      cwd: deps.storage.repoPath(cmd.repoId),
      config: receivePackConfig(deps.hooksDir, deps.maxPushBytes, deps.fsckIgnore),
      env: receivePackEnv(deps.hookPort, pushId),
      slot,
      timeoutMs: deps.gitTimeoutMs,
    });
    // The pack goes to the repo's other replicas as it arrives (PackTee), as over HTTP.
    const tee = deps.coordinator.openTee(cmd.repoId);
    const state = { abandoned: false };
    let connected = false;
    const unregister = deps.hooks.expect(pushId, async (exchange) => {
      connected = true;
      hooks.busy(true);
      try {
        await deps.coordinator.handlePush(exchange, {
          repoId: cmd.repoId,
          receivePackPid: child.pid ?? -1,
          exited: waitClose(child),
          tee,
          refusalFor: (incarnation) => refusalFor(deps.directory, decided, incarnation),
          abandon: () => {
            state.abandoned = true;
            try {
              channel.close();
            } catch {
              /* gone */
            }
            void terminate(child);
          },
          audit: (txn, refs) => ({
            action: 'push',
            user: id.user,
            token: `ssh-key:${id.keyName}`,
            repo: cmd.repoId,
            refs,
            txn,
            detail: { via: 'ssh' },
          }),
        });
      } finally {
        hooks.busy(false);
      }
    });
    try {
      return await serveGit(
        deps,
        channel,
        cmd,
        id,
        child,
        hooks,
        state,
        tee ? new PackTap(tee) : null,
        watchShallow(deps.storage.repoPath(cmd.repoId)),
      );
    } finally {
      unregister();
      // As the HTTP route: a receive-pack killed before its hook connected left its pack's .keep,
      // and the peers' copies of its pack will not be named by a transaction.
      if (!connected) {
        deps.coordinator.dropReceivedKeep({ repoId: cmd.repoId, receivePackPid: child.pid ?? -1, exited: waitClose(child) });
        deps.coordinator.dropTee(cmd.repoId, tee);
      }
    }
  } finally {
    endUpload();
  }
}

/**
 * serveGit pipes the channel into git and git's output back, and reports git's exit status; it
 * returns that status, or null when the channel ended without one (an abandoned push).
 */
async function serveGit(
  deps: SessionDeps,
  channel: ServerChannel,
  cmd: GitCommand,
  id: SshIdentity,
  child: ChildProcess,
  hooks: SessionHooks,
  state = { abandoned: false },
  tap: PackTap | null = null,
  shallow: ShallowWatch | null = null,
): Promise<number | null> {
  const onGone = (): void => {
    void terminate(child);
  };
  hooks.onIdle?.(onGone);
  channel.on('close', onGone);
  channel.on('error', onGone);
  child.stdin?.on('error', () => undefined);
  channel.on('data', hooks.touch);
  child.stdout?.on('data', hooks.touch);
  // A push's input is checked as over HTTP before receive-pack reads it: its pkt-lines (the
  // commands and push options at most PUSH_COMMANDS_BYTES), then the shallow watch
  // (watchShallow). A check that fails (a malformed line, too many commands, a note not
  // written) ends the push, telling the client why. (Before, SSH had no such check: 100 MB of
  // commands went to receive-pack, and garbage reached the shallow watch, which took it for a
  // shallow line it could not read and took the replica's links-checked mark away.)
  let input: Readable = channel;
  if (shallow) {
    input = chain(
      channel,
      new PktLineValidator({ packAfterFlush: true, maxPreambleBytes: PUSH_COMMANDS_BYTES, allowEmpty: true }),
      shallow,
    );
    input.on('error', (err) => {
      try {
        channel.stderr.write(`git-replication: ${errorMessage(err)}\n`);
      } catch {
        // the client is gone already
      }
      void terminate(child);
    });
  }
  if (child.stdin && tap) {
    // A channel that closes without its end (the client gone mid-push) aborts the copies.
    channel.on('close', () => tap.destroy());
    tap.on('error', () => undefined);
    input.pipe(tap).pipe(child.stdin);
  } else if (child.stdin) input.pipe(child.stdin);
  child.stdout?.pipe(channel, { end: false });
  child.stderr?.pipe(channel.stderr, { end: false });
  const [code, signal] = await waitClose(child);
  channel.removeListener('close', onGone);
  if (state.abandoned) return null;
  if (signal) deps.logger.warn({ service: cmd.service, repo: cmd.repoId, user: id.user, signal }, 'ssh git process killed');
  try {
    channel.exit(code ?? 255);
    channel.end();
  } catch {
    // the client is gone already
  }
  return code ?? 255;
}

/**
 * proxySession forwards the session to an in-sync peer's SSH server: the node signs in as `hop`
 * with a signed token naming the original user (the peer applies that user's permissions), checks
 * the peer presents the cluster's host key, runs the same git command, and pipes both ways. A
 * peer that ends without an exit status ends this channel without one too (outcome unknown).
 */
async function proxySession(
  deps: SessionDeps,
  channel: ServerChannel,
  id: SshIdentity,
  cmd: GitCommand,
  gitProtocol: string | null,
  nodeId: string,
  hooks: SessionHooks,
): Promise<void> {
  const ep = await deps.peerSsh(nodeId);
  if (!ep) throw new SshRefusal(`replica of ${cmd.repoId} on this node is catching up and ${nodeId} serves no SSH, try again`);
  const upstream = new Client();
  await new Promise<void>((resolve) => {
    let started = false;
    const fail = (err: unknown): void => {
      if (!started) refuse(channel, `proxy to in-sync replica failed: ${errorMessage(err)}`);
      else
        try {
          channel.close();
        } catch {
          /* gone */
        }
      upstream.end();
      resolve();
    };
    upstream.on('error', fail);
    upstream.on('close', () => resolve());
    channel.on('close', () => upstream.end());
    upstream.on('ready', () => {
      upstream.exec(`${cmd.service} '/${cmd.repoId}.git'`, gitProtocol ? { env: { GIT_PROTOCOL: gitProtocol } } : {}, (err, stream) => {
        if (err) return fail(err);
        started = true;
        // The peer times out an idle session itself; here a push waiting for its quorum sends nothing.
        hooks.busy(true);
        let status: number | null = null;
        stream.on('exit', (code: number | null) => {
          status = code ?? 255;
        });
        stream.on('data', hooks.touch);
        channel.on('data', hooks.touch);
        stream.on('error', () => undefined);
        channel.pipe(stream);
        stream.pipe(channel, { end: false });
        stream.stderr.pipe(channel.stderr, { end: false });
        stream.on('close', () => {
          hooks.busy(false);
          try {
            if (status === null) channel.close();
            else {
              channel.exit(status);
              channel.end();
            }
          } catch {
            /* gone */
          }
          upstream.end();
        });
      });
    });
    upstream.connect({
      host: ep.host,
      port: ep.port,
      username: 'hop',
      password: signSshHop(deps.secret, { user: id.user, key: id.keyName, client: id.client }),
      hostVerifier: (key: Buffer) => key.equals(deps.hostKeyBlob),
      readyTimeout: 10_000,
      tryKeyboard: false,
    });
  });
}
