import { createServer, connect, type Server, type Socket } from 'node:net';

/**
 * ProxyMode is what a fault proxy does with traffic: forward it (optionally delayed), drop
 * connections (refused-like resets), or black-hole them (accepted, never answered: what a
 * network partition looks like to TCP).
 */
export type ProxyMode = { kind: 'pass' } | { kind: 'delay'; ms: number } | { kind: 'drop' } | { kind: 'blackhole' };

interface Conn {
  readonly client: Socket;
  upstream: Socket | null;
  frozen: boolean;
  /** source is who opened the connection (a node id), when the proxy can tell. */
  source: string | null;
}

/** Identify names the process that owns a connection's source port (see sockets.ts), or null. */
export type Identify = (remotePort: number) => Promise<string | null>;

/**
 * FaultProxy is a tiny TCP forwarder on a loopback port in front of one node. A node that
 * advertises the proxy's URL (`ADVERTISE_URL`) is reached by its peers (prepare, commit,
 * proxied git requests, repair fetches) only through it, so the test controls that link.
 */
export class FaultProxy {
  private mode: ProxyMode = { kind: 'pass' };
  private readonly conns = new Set<Conn>();
  private readonly blocked = new Set<string>();
  /** target is the node's real port; until it is set, connections are dropped. */
  target: number | null = null;
  /** identify, when set, tells who opened each connection, so sources can be blocked. */
  identify: Identify | null = null;
  /** stats count connections: accepted, with a known source, and cut (black-holed or dropped). */
  readonly stats = { accepted: 0, identified: 0, cutBySource: 0, cut: 0 };

  private constructor(
    private readonly server: Server,
    readonly port: number,
  ) {}

  /** start listens on a free loopback port. */
  static async start(): Promise<FaultProxy> {
    let self: FaultProxy | null = null;
    const server = createServer((s) => self?.accept(s));
    const port = await new Promise<number>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => {
        const a = server.address();
        resolve(typeof a === 'object' && a ? a.port : 0);
      });
    });
    self = new FaultProxy(server, port);
    return self;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  get currentMode(): ProxyMode {
    return this.mode;
  }

  /** setMode switches the proxy; black-holing freezes live connections too, healing resets them. */
  setMode(mode: ProxyMode): void {
    this.mode = mode;
    this.reconsider();
  }

  /**
   * block black-holes connections opened by `source` (needs `identify`): new ones and live ones;
   * unblock resets the frozen ones.
   */
  block(source: string): void {
    this.blocked.add(source);
    this.reconsider();
  }

  unblock(source: string): void {
    this.blocked.delete(source);
    this.reconsider();
  }

  private cut(c: Conn): boolean {
    return this.mode.kind === 'blackhole' || (c.source !== null && this.blocked.has(c.source));
  }

  private reconsider(): void {
    for (const c of [...this.conns]) {
      if (this.mode.kind === 'drop') this.drop(c);
      else if (this.cut(c)) this.freeze(c);
      else if (c.frozen) this.drop(c);
    }
  }

  private freeze(c: Conn): void {
    if (c.frozen) return;
    c.frozen = true;
    this.stats.cut++;
    if (this.mode.kind !== 'blackhole') this.stats.cutBySource++;
  }

  private accept(client: Socket): void {
    client.on('error', () => undefined);
    const conn: Conn = { client, upstream: null, frozen: false, source: null };
    if (this.target === null || this.mode.kind === 'drop') {
      client.destroy();
      return;
    }
    this.conns.add(conn);
    this.stats.accepted++;
    client.on('close', () => this.drop(conn));
    if (!this.identify) return this.open(conn);
    // Hold the connection until its source is known, so a blocked node's request never slips through.
    client.pause();
    const port = client.remotePort ?? 0;
    this.identify(port)
      .then(
        (who) => {
          conn.source = who;
          if (who) this.stats.identified++;
        },
        () => undefined,
      )
      .finally(() => {
        if (!this.conns.has(conn)) return;
        client.resume();
        this.open(conn);
      });
  }

  private open(conn: Conn): void {
    const client = conn.client;
    if (this.target === null) return this.drop(conn);
    if (this.cut(conn)) {
      this.freeze(conn);
      client.on('data', () => undefined);
      return;
    }
    const upstream = connect(this.target, '127.0.0.1');
    conn.upstream = upstream;
    upstream.on('error', () => undefined);
    upstream.on('close', () => this.drop(conn));
    this.forward(conn, client, upstream);
    this.forward(conn, upstream, client);
  }

  private forward(conn: Conn, from: Socket, to: Socket): void {
    let last = 0;
    const later = (fn: () => void): void => {
      const ms = this.mode.kind === 'delay' ? this.mode.ms : 0;
      if (ms === 0 && last <= Date.now()) return fn();
      const at = Math.max(Date.now() + ms, last);
      last = at;
      setTimeout(fn, at - Date.now());
    };
    from.on('data', (chunk: Buffer) => {
      if (conn.frozen) return;
      later(() => {
        if (!conn.frozen && !to.destroyed) to.write(chunk);
      });
    });
    from.on('end', () =>
      later(() => {
        if (!to.destroyed) to.end();
      }),
    );
  }

  private drop(c: Conn): void {
    if (!this.conns.delete(c)) return;
    c.client.destroy();
    c.upstream?.destroy();
  }

  /** close stops the proxy and drops every connection. */
  async close(): Promise<void> {
    for (const c of [...this.conns]) this.drop(c);
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}
