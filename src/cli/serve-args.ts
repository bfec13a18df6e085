/** NodeLaunch is what a launcher (`up`, the test cluster, the benchmark) decides about one node process. */
export interface NodeLaunch {
  readonly id: string;
  readonly port: number;
  /** host is the listen address (default serve's own, 127.0.0.1). */
  readonly host?: string;
  readonly dataDir: string;
  /** store is the `--store` URL (`sqlite:<file>` or `etcd://host:port,...`). */
  readonly store: string;
  readonly replicationFactor?: number | string;
  readonly writeQuorum?: number | string;
  readonly sshPort?: number;
  readonly logLevel?: string;
  /** tls names the node's certificate, key and the CA of its peers. */
  readonly tls?: { readonly cert: string; readonly key: string; readonly ca: string };
}

/**
 * serveArgs is the argument list of `node <main> serve ...` for one node: the one place that
 * turns a launcher's decisions into `serve` flags, so `up`, the test cluster and the benchmark
 * start nodes the same way.
 */
export function serveArgs(main: string, n: NodeLaunch): string[] {
  const args = [main, 'serve', '--id', n.id, '--port', String(n.port), '--data-dir', n.dataDir, '--store', n.store];
  if (n.host !== undefined) args.push('--host', n.host);
  if (n.logLevel !== undefined) args.push('--log-level', n.logLevel);
  if (n.sshPort !== undefined) args.push('--ssh-port', String(n.sshPort));
  if (n.writeQuorum !== undefined) args.push('--write-quorum', String(n.writeQuorum));
  if (n.replicationFactor !== undefined) args.push('--replication-factor', String(n.replicationFactor));
  if (n.tls) args.push('--tls-cert', n.tls.cert, '--tls-key', n.tls.key, '--tls-ca', n.tls.ca);
  return args;
}
