import { writeFile } from 'node:fs/promises';
import type { Server as NetServer, Socket } from 'node:net';
import ssh2 from 'ssh2';
import { type AuthContext, type Connection, type ServerChannel, type Session } from 'ssh2';
import { verifySshHop } from '../auth/peer-signature.js';
import type { ClusterStore } from '../store/types.js';
import type { SshKeys } from '../auth/ssh-keys.js';
import { errorMessage } from '../domain/errors.js';
import { addressKey } from '../domain/client-address.js';
import type { PeerAddresses } from '../http/connection-guard.js';
import { gitProtocolValue, ONLY_GIT, parseLfsAuthenticate, type LfsAuthenticate } from './command.js';
import {
  channelActivity,
  refuse,
  runGitCommand,
  runLfsAuthenticate,
  type SessionDeps,
  type SessionHooks,
  type SshIdentity,
} from './session.js';
import { DEFAULTS } from '../config.js';

// ssh2 is CommonJS: its named exports are read from the default export.
const { Server, utils } = ssh2;

/** SshLimits bound what one SSH client may hold (SECURITY.md). */
export interface SshLimits {
  /** maxConnectionsPerUser: signed-in connections one user may hold at once. */
  readonly maxConnectionsPerUser: number;
  /** idleMs: a connection without channel data this long is closed. */
  readonly idleMs: number;
  /** sessionMs: a connection is closed after this long, whatever it does. */
  readonly sessionMs: number;
  /** maxAuthAttempts: sign-in attempts (keys offered) per connection before it is closed. */
  readonly maxAuthAttempts: number;
  /** handshakeMs: a connection not signed in by then is closed. */
  readonly handshakeMs: number;
}

/** SSH_DEFAULTS are the SSH server's default limits: the settings' defaults (src/config.ts), and the handshake time. */
export const SSH_DEFAULTS: SshLimits = {
  maxConnectionsPerUser: DEFAULTS.sshMaxConnectionsPerUser,
  idleMs: DEFAULTS.sshIdleMs,
  sessionMs: DEFAULTS.sshSessionMs,
  maxAuthAttempts: DEFAULTS.sshMaxAuthAttempts,
  handshakeMs: DEFAULTS.sshHandshakeMs,
};

/**
 * MAX_PENDING_PER_ADDRESS bounds the connections one address may hold open before signing in,
 * MAX_PENDING all addresses' together: a connection that sends nothing, not even its version
 * line, holds a descriptor until handshakeMs (ssh2 tells of a connection only once that line
 * came, so the bound is kept on the TCP socket).
 */
export const MAX_PENDING_PER_ADDRESS = 128;
export const MAX_PENDING = 4_096;

/** MAX_SESSIONS is how many session channels one connection may have open (OpenSSH's MaxSessions). */
export const MAX_SESSIONS = 10;

/** SshServerDeps is what the SSH server needs: a session's needs, the keys, the host key and limits. */
export interface SshServerDeps extends SessionDeps {
  readonly keys: SshKeys;
  /** hostKey is the cluster's private host key (OpenSSH format), the same on every node. */
  readonly hostKey: string;
  readonly limits: SshLimits;
  /** peerAddresses are the members' addresses: their connections (proxied sessions) pass the caps on connections not signed in yet. */
  readonly peerAddresses?: PeerAddresses;
}

/** hostPublicKey returns a private host key's public line (`ssh-ed25519 AAAA…`) and blob. */
export function hostPublicKey(privateKey: string): { line: string; blob: Buffer } {
  const parsed = utils.parseKey(privateKey);
  if (parsed instanceof Error) throw new Error(`ssh host key: ${parsed.message}`);
  const blob = parsed.getPublicSSH();
  return { line: `${parsed.type} ${blob.toString('base64')}`, blob };
}

/**
 * GitSshServer is a node's SSH server (ssh2): public-key sign-in with users' registered keys (or
 * a signed hop from a peer), then only `git-upload-pack` and `git-receive-pack` on a repository,
 * decided and served as over HTTP (session.ts). Shells, ptys, other commands, subsystems and
 * forwarding are refused. Every connection and stream has an error listener: no client ends the
 * node.
 */
export class GitSshServer {
  private readonly server: InstanceType<typeof Server>;
  private readonly perUser = new Map<string, number>();
  private readonly connections = new Set<Connection>();

  /** pending counts, by address, the TCP connections not signed in yet; release ends a socket's count (and its timer) once it signs in. */
  private readonly pending = new Map<string, number>();
  private pendingAll = 0;
  private readonly release = new WeakMap<object, () => void>();

  constructor(private readonly deps: SshServerDeps) {
    this.server = new Server({ hostKeys: [deps.hostKey], ident: 'git-replication' }, (client, info) => this.accept(client, info.ip));
    this.server.on('error', (err: Error) => deps.logger.error({ err: errorMessage(err) }, 'ssh server error'));
    // ssh2 has no hook before a client's version line; its TCP server (`_srv`) has.
    const tcp = (this.server as unknown as { _srv: NetServer })._srv;
    tcp.on('connection', (socket: Socket) => this.guardSocket(socket));
  }

  /**
   * guardSocket bounds a TCP connection until it signs in: refused past MAX_PENDING_PER_ADDRESS
   * (or MAX_PENDING), destroyed past handshakeMs. (Before, a connection that sent nothing was
   * never timed out: 480 of them held a node's 512 descriptors, and its HTTP answered nothing.)
   */
  private guardSocket(socket: Socket): void {
    socket.on('error', () => undefined);
    const ip = addressKey(socket.remoteAddress);
    const mine = this.pending.get(ip) ?? 0;
    const peer = this.deps.peerAddresses?.has(socket.remoteAddress) ?? false;
    if (!peer && (mine >= MAX_PENDING_PER_ADDRESS || this.pendingAll >= MAX_PENDING)) {
      this.deps.metrics.sshConnectionsRefused.inc({ reason: mine >= MAX_PENDING_PER_ADDRESS ? 'per_address' : 'max' });
      socket.destroy();
      return;
    }
    this.pending.set(ip, mine + 1);
    this.pendingAll++;
    this.deps.metrics.sshPending.inc();
    let counted = true;
    const done = (): void => {
      if (!counted) return;
      counted = false;
      clearTimeout(timer);
      this.pendingAll--;
      this.deps.metrics.sshPending.dec();
      const left = (this.pending.get(ip) ?? 1) - 1;
      if (left <= 0) this.pending.delete(ip);
      else this.pending.set(ip, left);
    };
    // Signed in, the socket's count is released and this timer with it.
    const timer = setTimeout(() => {
      done();
      socket.destroy();
    }, this.deps.limits.handshakeMs);
    timer.unref();
    socket.once('close', done);
    this.release.set(socket, done);
  }

  /** listen starts serving on host:port and returns the bound port. */
  async listen(host: string, port: number): Promise<number> {
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(port, host, () => {
        this.server.removeListener('error', reject);
        resolve();
      });
    });
    const addr = this.server.address();
    return typeof addr === 'object' && addr ? addr.port : port;
  }

  /**
   * close stops accepting, lets the connections in flight (a push being replicated) finish for
   * up to `graceMs`, then ends the rest (their git processes are killed).
   */
  async close(graceMs = 0): Promise<void> {
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    const deadline = Date.now() + graceMs;
    while (this.connections.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    for (const c of this.connections) hardEnd(c);
    await closed;
  }

  private accept(client: Connection, ip: string): void {
    const { limits, logger, metrics } = this.deps;
    this.connections.add(client);
    metrics.sshConnections.inc();
    let identity: SshIdentity | null = null;
    let attempts = 0;
    let counted = false;
    let busy = 0;
    let lastActivity = Date.now();
    const timers: NodeJS.Timeout[] = [
      setTimeout(() => {
        if (!identity) hardEnd(client);
      }, limits.handshakeMs),
    ];
    client.on('error', (err: Error) => logger.debug({ err: errorMessage(err), ip }, 'ssh connection error'));
    client.on('authentication', (ctx: AuthContext) => {
      // A client's first `none` attempt only asks which methods there are: not a failure.
      const attempt = ctx.method !== 'none';
      if (attempt && ++attempts > limits.maxAuthAttempts) {
        metrics.sshAuthFailures.inc();
        ctx.reject();
        hardEnd(client);
        return;
      }
      this.authenticate(ctx, ip).then(
        (verdict) => {
          // The identity is set before accept(): 'ready' may fire inside it.
          if (verdict === 'reject') {
            if (attempt) metrics.sshAuthFailures.inc();
            return ctx.reject(['publickey']);
          }
          if (verdict !== 'accept') identity = verdict;
          ctx.accept();
        },
        (err: unknown) => {
          logger.warn({ err: errorMessage(err), ip }, 'ssh authentication failed');
          metrics.sshAuthFailures.inc();
          ctx.reject(['publickey']);
        },
      );
    });
    client.on('ready', () => {
      if (!identity) return client.end();
      const sock = (client as unknown as { _sock?: object })._sock;
      if (sock) this.release.get(sock)?.();
      const who = identity;
      counted = !who.hop;
      if (counted) this.perUser.set(who.user, (this.perUser.get(who.user) ?? 0) + 1);
      timers.push(setTimeout(() => hardEnd(client), limits.sessionMs));
      timers.push(
        setInterval(
          () => {
            if (busy === 0 && Date.now() - lastActivity > limits.idleMs) hardEnd(client);
          },
          Math.min(5_000, Math.max(100, Math.floor(limits.idleMs / 4))),
        ),
      );
      const over = counted && (this.perUser.get(who.user) ?? 0) > limits.maxConnectionsPerUser;
      const hooks: SessionHooks = {
        touch: () => {
          lastActivity = Date.now();
        },
        busy: (on) => {
          busy += on ? 1 : -1;
          lastActivity = Date.now();
        },
      };
      // At most MAX_SESSIONS session channels at a time: each costs the node memory (150,000
      // opened on one connection took 233 MB; 400,000 ended a node with a small heap).
      let sessions = 0;
      client.on('session', (accept, reject) => {
        if (sessions >= MAX_SESSIONS) return reject();
        sessions++;
        const session = accept();
        session.once('close', () => sessions--);
        this.session(session, who, over, hooks);
      });
    });
    // No port forwarding, no Unix sockets, no global requests.
    client.on('tcpip', (_accept, reject) => reject());
    client.on('openssh.streamlocal', (_accept, reject) => reject());
    client.on('request', (_accept, reject) => reject?.());
    client.on('close', () => {
      for (const t of timers) clearTimeout(t);
      if (this.connections.delete(client)) metrics.sshConnections.dec();
      if (counted && identity) {
        const left = (this.perUser.get(identity.user) ?? 1) - 1;
        if (left <= 0) this.perUser.delete(identity.user);
        else this.perUser.set(identity.user, left);
      }
    });
  }

  /**
   * authenticate decides a sign-in attempt: a registered key whose signature verifies, or a
   * peer's signed hop naming a user, is who signed in; a registered key offered without a
   * signature is only told it would do ('accept'); anything else is rejected.
   */
  private async authenticate(ctx: AuthContext, ip: string): Promise<SshIdentity | 'accept' | 'reject'> {
    if (ctx.method === 'password' && ctx.username === 'hop') {
      const hop = verifySshHop(this.deps.secret, ctx.password);
      return hop ? { user: hop.user, keyName: hop.key, client: hop.client, hop: true } : 'reject';
    }
    if (ctx.method !== 'publickey') return 'reject';
    const owner = await this.deps.keys.owner(ctx.key.data);
    if (!owner) return 'reject';
    if (!ctx.signature || !ctx.blob) return 'accept';
    if (owner.parsed.verify(ctx.blob, ctx.signature, ctx.hashAlgo) !== true) return 'reject';
    return { user: owner.user, keyName: owner.keyName, client: addressKey(ip), hop: false, key: ctx.key.data };
  }

  /** keyStillRegistered says whether the key a connection signed in with is still its user's (a hop's was checked at the first node). */
  private async keyStillRegistered(who: SshIdentity): Promise<boolean> {
    if (who.hop || !who.key) return true;
    const owner = await this.deps.keys.owner(who.key);
    return owner !== null && owner.user === who.user;
  }

  private session(session: Session, who: SshIdentity, over: boolean, hooks: SessionHooks): void {
    let gitProtocol: string | null = null;
    let used = false;
    session.on('error', () => undefined);
    session.on('env', (accept, reject, info) => {
      const v = info.key === 'GIT_PROTOCOL' ? gitProtocolValue(info.val) : null;
      if (v) {
        gitProtocol = v;
        accept?.();
      } else reject?.();
    });
    for (const refused of ['pty', 'x11', 'auth-agent', 'subsystem', 'sftp']) {
      session.on(refused, (_accept: unknown, reject?: () => void) => reject?.());
    }
    const refused = (channel: ServerChannel, message: string): void => {
      this.deps.metrics.sshCommands.inc({ service: 'other', outcome: 'refused' });
      refuse(channel, message);
    };
    // ssh2's accept() gives nothing for a second command on a session whose channel is open:
    // such a request is refused (it ended the whole connection, an in-flight push with it).
    session.on('shell', (accept, reject) => {
      const channel = accept();
      if (!channel) return reject?.();
      refused(guard(channel), `Hi ${who.user}! You are signed in, but ${ONLY_GIT}.`);
    });
    session.on('exec', (accept, reject, info) => {
      const opened = accept();
      if (!opened) return reject?.();
      const channel = guard(opened);
      if (used) return refused(channel, 'one command per session');
      used = true;
      if (over)
        return refused(
          channel,
          `too many SSH connections for user ${who.user} (at most ${this.deps.limits.maxConnectionsPerUser} at a time), try again`,
        );
      hooks.touch();
      void this.keyStillRegistered(who).then(
        (registered) => {
          // A key removed (or its user disabled) since the sign-in ends its open connections'
          // next command too, within the keys' one-second cache, as a new connection would be
          // refused. (Before, a connection kept open, an OpenSSH ControlMaster, pushed for up to
          // the session time after its key was removed.)
          if (!registered)
            return refused(channel, `the key ${who.keyName} this connection signed in with is no longer registered (removed or expired)`);
          const activity = channelActivity(hooks, this.deps.limits.idleMs, () =>
            refuse(channel, `no data on this channel for ${Math.round(this.deps.limits.idleMs / 1000)} s`),
          );
          channel.once('close', activity.stop);
          let lfs: LfsAuthenticate | null;
          try {
            lfs = parseLfsAuthenticate(info.command);
          } catch (err) {
            activity.stop();
            return refused(channel, errorMessage(err));
          }
          if (lfs) void runLfsAuthenticate(this.deps, channel, who, lfs).finally(activity.stop);
          else void runGitCommand(this.deps, channel, who, info.command, gitProtocol, activity.hooks).finally(activity.stop);
        },
        (err: unknown) => refused(channel, `could not check the key: ${errorMessage(err)}, try again`),
      );
    });
  }
}

/**
 * hardEnd sends a disconnect and ends the connection, then destroys its socket if the client
 * has not closed it within a second: end() alone only half-closes, and a client that never
 * answers would keep the socket. ssh2 has no public destroy, hence its `_sock`.
 */
function hardEnd(client: Connection): void {
  client.end();
  const sock = (client as unknown as { _sock?: { destroy(): void; destroyed?: boolean } })._sock;
  if (sock)
    setTimeout(() => {
      if (!sock.destroyed) sock.destroy();
    }, 1_000).unref();
}

function guard(channel: ServerChannel): ServerChannel {
  channel.on('error', () => undefined);
  channel.stderr.on('error', () => undefined);
  return channel;
}

/**
 * newHostKey makes an ed25519 host key. ssh2's generator drops a leading zero byte of the public
 * key about once in 300 keys, writing a key its own parser refuses: such keys are made again.
 */
export function newHostKey(): string {
  for (;;) {
    const key = utils.generateKeyPairSync('ed25519').private;
    if (!(utils.parseKey(key) instanceof Error)) return key;
  }
}

/** HOST_KEY_META is the store key of the cluster's SSH host key. */
export const HOST_KEY_META = 'ssh_host_key';

/**
 * loadHostKey returns the cluster's SSH host key: made by the first node that needs one and
 * stored by compare-and-swap, so every node presents the same key (a client moved by a load
 * balancer sees no changed host key); cached 0600 in the data dir.
 */
export async function loadHostKey(store: { setMetaIfAbsent(key: string, value: string): Promise<string> }, file: string): Promise<string> {
  const key = await store.setMetaIfAbsent(HOST_KEY_META, newHostKey());
  await writeFile(file, key, { mode: 0o600 });
  return key;
}

/** SSH_ENDPOINT_PREFIX keys each node's SSH endpoint in the store (`ssh-endpoints/<node id>`). */
const SSH_ENDPOINT_PREFIX = 'ssh-endpoints/';

/** StartSsh is what startSshServer needs besides a session's dependencies. */
export interface StartSsh extends Omit<SshServerDeps, 'hostKey' | 'hostKeyBlob' | 'peerSsh'> {
  readonly store: Pick<ClusterStore, 'setMetaIfAbsent' | 'setMeta' | 'getMeta'>;
  readonly nodeId: string;
  /** host and port to listen on (port 0: any free port). */
  readonly host: string;
  readonly port: number;
  /** advertiseHost is the host name peers reach this node's SSH port at (that of its URL). */
  readonly advertiseHost: string;
  readonly hostKeyFile: string;
}

/**
 * startSshServer loads the cluster's host key, starts the SSH server and registers its endpoint
 * in the store, where a node that proxies a session to this one finds it.
 */
export async function startSshServer(o: StartSsh): Promise<{ server: GitSshServer; port: number }> {
  const hostKey = await loadHostKey(o.store, o.hostKeyFile);
  const peerSsh = async (nodeId: string): Promise<{ host: string; port: number } | null> => {
    const raw = await o.store.getMeta(`${SSH_ENDPOINT_PREFIX}${nodeId}`);
    return raw ? (JSON.parse(raw) as { host: string; port: number }) : null;
  };
  const server = new GitSshServer({ ...o, hostKey, hostKeyBlob: hostPublicKey(hostKey).blob, peerSsh });
  const port = await server.listen(o.host, o.port);
  await o.store.setMeta(`${SSH_ENDPOINT_PREFIX}${o.nodeId}`, JSON.stringify({ host: o.advertiseHost, port }));
  return { server, port };
}

/** forgetSshEndpoint removes a node's SSH endpoint (it starts without SSH): peers stop proxying to it. */
export async function forgetSshEndpoint(store: Pick<ClusterStore, 'deleteMeta'>, nodeId: string): Promise<void> {
  await store.deleteMeta(`${SSH_ENDPOINT_PREFIX}${nodeId}`);
}
