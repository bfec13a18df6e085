import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { chmod, mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Option, type Command } from 'commander';
import { Agent, request, type Dispatcher } from 'undici';
import { errorMessage } from '../domain/errors.js';
import { DataDirInUseError, DataDirLock } from '../cluster/data-dir-lock.js';
import { makeLocalCa, OpensslMissingError, type LocalCa } from '../cluster/local-ca.js';
import { ETCD_INSTALL_HINT, etcdStoreUrl, findEtcdBinary, startLocalEtcd, type LocalEtcd } from '../cluster/local-etcd.js';
import { examples } from './help.js';
import { LOG_FORMATS, logFormatOf, relayLogs, type LogFormat } from './log-relay.js';
import { serveArgs } from './serve-args.js';

interface UpOptions {
  nodes: string;
  basePort: string;
  data: string;
  writeQuorum?: string;
  replicationFactor?: string;
  logLevel?: string;
  store?: string;
  etcdUrl?: string;
  etcdPort?: string;
  tls?: boolean;
  ssh: boolean;
  sshBasePort?: string;
  logFormat?: LogFormat;
}

/**
 * adminToken finds the admin token the cluster's first start wrote into one node's data dir and
 * keeps a copy (mode 0600) at `<data>/admin-token`, so a restarted `up` still shows it.
 */
async function adminToken(data: string, nodeDirs: readonly string[]): Promise<string | null> {
  for (const file of [join(data, 'admin-token'), ...nodeDirs.map((d) => join(d, 'admin-token'))]) {
    const token = (await readFile(file, 'utf8').catch(() => '')).trim();
    if (token) {
      await writeFile(join(data, 'admin-token'), `${token}\n`, { mode: 0o600 });
      return token;
    }
  }
  return null;
}

/**
 * writeClusterFile replaces `<data>/cluster.json` in one step (a temporary file renamed over it):
 * a script or test that reads it as soon as it exists never finds it empty or half written.
 */
async function writeClusterFile(data: string, file: ClusterFile): Promise<void> {
  const tmp = join(data, `.cluster.json.${process.pid}.tmp`);
  await writeFile(tmp, `${JSON.stringify(file, null, 2)}\n`);
  await rename(tmp, join(data, 'cluster.json'));
}

/** ClusterFile is `<data>/cluster.json`: what `up` started, for scripts and tests. */
export interface ClusterFile {
  readonly store: string;
  readonly nodes: Array<{ id: string; url: string; pid: number; dataDir: string }>;
  /** etcd is the etcd the nodes use with `--store etcd` or `--etcd-url`; pid and dataDir only when `up` started it. */
  readonly etcd?: { url: string; pid: number | null; dataDir: string | null; managed: boolean };
}

async function waitHealthy(url: string, child: ChildProcess, timeoutMs: number, dispatcher: Dispatcher | undefined): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`node at ${url} exited with code ${child.exitCode}`);
    try {
      const res = await request(`${url}/health`, { dispatcher });
      await res.body.dump();
      if (res.statusCode === 200) return;
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`node at ${url} did not become healthy in ${timeoutMs} ms`);
}

/** localCa makes the throw-away CA and node certificates of `up --tls` in `<data>/tls`, or exits 2 without openssl. */
async function localCa(data: string, n: number): Promise<LocalCa> {
  try {
    return await makeLocalCa(
      join(data, 'tls'),
      Array.from({ length: n }, (_, i) => `node-${i + 1}`),
    );
  } catch (err) {
    process.stderr.write(`git-replication up --tls: ${errorMessage(err)}\n`);
    process.exit(err instanceof OpensslMissingError ? 2 : 1);
  }
}

/** RESTART_BACKOFF_MS: a node that keeps dying is restarted after 1, 2, 4 … s, at most 30 s apart. */
const RESTART_BACKOFF_MS = { first: 1_000, max: 30_000, healthyAfter: 60_000 } as const;

/**
 * supervise restarts a node that exits while `up` runs (not while it stops), with backoff, and
 * says so on stderr: `up` never sits silently with a dead node. A node that stayed up for a
 * minute starts its backoff again from the first delay.
 */
function supervise(
  c: { id: string; child: ChildProcess; args: string[] },
  start: (args: string[]) => ChildProcess,
  stopping: () => boolean,
  onRestart: () => Promise<void>,
): void {
  let delay: number = RESTART_BACKOFF_MS.first;
  let startedAt = Date.now();
  const watch = (): void => {
    c.child.once('exit', (code, signal) => {
      if (stopping()) return;
      if (Date.now() - startedAt > RESTART_BACKOFF_MS.healthyAfter) delay = RESTART_BACKOFF_MS.first;
      process.stderr.write(`git-replication up: ${c.id} exited (${signal ?? `code ${code}`}); restarting it in ${delay / 1000} s\n`);
      setTimeout(() => {
        if (stopping()) return;
        c.child = start(c.args);
        startedAt = Date.now();
        process.stderr.write(`git-replication up: ${c.id} restarted (pid ${c.child.pid ?? '?'})\n`);
        void onRestart().catch(() => undefined);
        watch();
      }, delay);
      delay = Math.min(RESTART_BACKOFF_MS.max, delay * 2);
    });
  };
  watch();
}

/** SSH_PORT_OFFSET: by default a node's SSH port is its HTTP port minus this (3001 → 2222). */
const SSH_PORT_OFFSET = 779;

/** portsFree says whether n consecutive loopback ports from `first` can be bound now. */
async function portsFree(first: number, n: number): Promise<boolean> {
  for (let p = first; p < first + n; p++) {
    const free = await new Promise<boolean>((resolve) => {
      const srv = createServer();
      srv.once('error', () => resolve(false));
      srv.listen(p, '127.0.0.1', () => srv.close(() => resolve(true)));
    });
    if (!free) return false;
  }
  return true;
}

/** registerUp adds `git-replication up`: a local cluster of N node processes sharing one store. */
export function registerUp(program: Command): void {
  program
    .command('up')
    .description('start a local cluster of N nodes on consecutive ports (the quick start)')
    .addHelpText(
      'after',
      examples(
        'git-replication up',
        'git-replication up --nodes 5 --base-port 4001 --data /tmp/cluster',
        'git-replication up --store etcd --tls',
        'git-replication up --log-format json | jq -c \'select(.kind == "push")\'',
      ),
    )
    .option('--nodes <n>', 'number of nodes', '3')
    .option('--base-port <port>', 'port of the first node', '3001')
    .option('--data <dir>', 'data directory of the cluster', './data')
    .option(
      '--store <url>',
      'coordination store: sqlite:<path>, etcd://host:port, or etcd to start a local etcd (default sqlite:<data>/cluster.db)',
    )
    .option('--etcd-url <url>', 'use a running etcd (http://host:port[,http://host:port]) instead of starting one; implies --store etcd')
    .option('--etcd-port <port>', 'client port of the local etcd with --store etcd (default base port + 1000; peer port is one more)')
    .option('--write-quorum <n>', 'replicas that must confirm a write (default majority)')
    .option('--replication-factor <n>', 'replicas per repo (default min(3, nodes))')
    .option('--log-level <level>', 'node log level', 'info')
    .addOption(
      new Option(
        '--log-format <format>',
        'node logs as readable lines (pino-pretty) or JSON (default: pretty on a terminal, else json)',
      ).choices(LOG_FORMATS),
    )
    .option('--tls', 'serve HTTPS: make a throw-away local CA and node certificates in <data>/tls (needs openssl)')
    .option(
      '--ssh-base-port <port>',
      `SSH port of the first node (git over SSH); the others follow (default: base port - ${SSH_PORT_OFFSET}, 2222 for 3001)`,
    )
    .option('--no-ssh', 'serve git over HTTP only')
    .action(async (o: UpOptions) => {
      const n = Number(o.nodes);
      const base = Number(o.basePort);
      if (!Number.isInteger(n) || n < 1 || n > 32) throw new Error('--nodes must be 1-32');
      if (!Number.isInteger(base) || base < 1 || base + n > 65535) throw new Error('--base-port out of range');
      const sshBase = o.sshBasePort === undefined ? base - SSH_PORT_OFFSET : Number(o.sshBasePort);
      const sshInRange = Number.isInteger(sshBase) && sshBase >= 1 && sshBase + n <= 65535;
      if (o.ssh && o.sshBasePort !== undefined && !sshInRange) throw new Error('--ssh-base-port out of range');
      // Derived SSH ports that are out of range or taken turn SSH off rather than fail the cluster.
      const sshWanted = o.ssh;
      o.ssh = o.ssh && sshInRange && (o.sshBasePort !== undefined || (await portsFree(sshBase, n)));
      const data = resolve(o.data);
      await mkdir(data, { recursive: true, mode: 0o700 });
      await chmod(data, 0o700);
      // A cluster already running on this directory (a second `npm start`): said at once, before
      // anything starts. Its nodes would answer the health checks of this one's, which fail.
      for (let i = 1; i <= n; i++) {
        const dir = join(data, `node-${i}`);
        if (!existsSync(dir)) continue;
        try {
          DataDirLock.take(dir).release();
        } catch (err) {
          if (!(err instanceof DataDirInUseError)) throw err;
          process.stderr.write(`git-replication up: ${err.message} (is a cluster already running on ${data}?)\n`);
          process.exit(2);
        }
      }
      let etcd: LocalEtcd | null = null;
      let etcdEntry: ClusterFile['etcd'];
      let store = o.store ?? `sqlite:${join(data, 'cluster.db')}`;
      if (o.etcdUrl !== undefined) {
        if (o.store !== undefined && o.store !== 'etcd') throw new Error('--etcd-url needs --store etcd (or no --store)');
        store = etcdStoreUrl(o.etcdUrl);
        etcdEntry = { url: o.etcdUrl, pid: null, dataDir: null, managed: false };
      } else if (o.store === 'etcd') {
        const binary = findEtcdBinary();
        if (!binary) {
          const where = process.env.ETCD_BIN
            ? `ETCD_BIN=${process.env.ETCD_BIN} is not an executable`
            : 'none was found on PATH or in /usr/bin';
          process.stderr.write(`git-replication up: --store etcd needs an etcd binary and ${where}: ${ETCD_INSTALL_HINT}\n`);
          process.exit(2);
        }
        const etcdPort = o.etcdPort === undefined ? base + 1000 : Number(o.etcdPort);
        if (!Number.isInteger(etcdPort) || etcdPort < 1 || etcdPort + 1 > 65535) throw new Error('--etcd-port out of range');
        // A Ctrl-C while etcd starts must not leave it running: remember it, stop etcd once it is up.
        let interrupted = false;
        const onEarlySignal = (): void => {
          interrupted = true;
        };
        for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.once(sig, onEarlySignal);
        try {
          etcd = await startLocalEtcd({ dir: join(data, 'etcd'), clientPort: etcdPort, binary });
        } catch (err) {
          process.stderr.write(`git-replication up: could not start etcd: ${errorMessage(err)}\n`);
          process.exit(1);
        } finally {
          for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.removeListener(sig, onEarlySignal);
        }
        const started = etcd;
        if (interrupted) {
          await started.stop();
          process.exit(130);
        }
        // Should `up` die without stopping it, etcd (in its own process group) must not outlive it.
        process.once('exit', () => started.killNow());
        store = etcd.storeUrl;
        etcdEntry = { url: etcd.url, pid: etcd.pid, dataDir: etcd.dataDir, managed: true };
        process.stdout.write(`git-replication: etcd up at ${etcd.url} (data ${etcd.dataDir}, log ${etcd.logFile})\n`);
      }
      const tls = o.tls ? await localCa(data, n) : null;
      const scheme = tls ? 'https' : 'http';
      const main = fileURLToPath(new URL('./main.js', import.meta.url));
      // Nodes always write JSON; on a terminal `up` relays it through pino-pretty.
      const pretty = logFormatOf(o.logFormat, process.stdout.isTTY === true) === 'pretty';
      const startNode = (args: string[]): ChildProcess => {
        const child = spawn(process.execPath, args, { stdio: ['ignore', pretty ? 'pipe' : 'inherit', 'inherit'], env: process.env });
        if (pretty && child.stdout) relayLogs(child.stdout, process.stdout);
        return child;
      };
      const children: Array<{ id: string; url: string; child: ChildProcess; dataDir: string; args: string[] }> = [];
      for (let i = 1; i <= n; i++) {
        const id = `node-${i}`;
        const port = base + i - 1;
        const dataDir = join(data, id);
        const files = tls?.nodes[id];
        const args = serveArgs(main, {
          id,
          port,
          dataDir,
          store,
          logLevel: o.logLevel ?? 'info',
          ...(o.ssh ? { sshPort: sshBase + i - 1 } : {}),
          ...(o.writeQuorum ? { writeQuorum: o.writeQuorum } : {}),
          replicationFactor: o.replicationFactor ?? Math.min(3, n),
          ...(tls && files ? { tls: { cert: files.cert, key: files.key, ca: tls.ca } } : {}),
        });
        const child = startNode(args);
        children.push({ id, url: `${scheme}://127.0.0.1:${port}`, child, dataDir, args });
      }
      let stopping = false;
      const stopAll = async (code: number): Promise<void> => {
        if (stopping) return;
        stopping = true;
        process.stderr.write('stopping cluster...\n');
        await Promise.all(
          children.map(
            ({ child }) =>
              new Promise<void>((res) => {
                if (child.exitCode !== null || child.signalCode !== null) return res();
                const t = setTimeout(() => child.kill('SIGKILL'), 10_000);
                child.once('exit', () => {
                  clearTimeout(t);
                  res();
                });
                child.kill('SIGTERM');
              }),
          ),
        );
        if (etcd) {
          process.stderr.write('stopping etcd...\n');
          await etcd.stop();
        }
        process.exit(code);
      };
      process.once('SIGINT', () => void stopAll(0));
      process.once('SIGTERM', () => void stopAll(0));
      process.once('SIGHUP', () => void stopAll(0));
      const agent = tls ? new Agent({ connect: { ca: await readFile(tls.ca) } }) : undefined;
      try {
        await Promise.all(children.map((c) => waitHealthy(c.url, c.child, 60_000, agent)));
      } catch (err) {
        process.stderr.write(`git-replication up: ${errorMessage(err)}\n`);
        await stopAll(1);
        return;
      } finally {
        await agent?.close();
      }
      const file: ClusterFile = {
        store,
        nodes: children.map((c) => ({ id: c.id, url: c.url, pid: c.child.pid ?? -1, dataDir: c.dataDir })),
        ...(etcdEntry ? { etcd: etcdEntry } : {}),
      };
      await writeClusterFile(data, file);
      process.stdout.write(`\ngit-replication: ${n} nodes up (store ${store})\n`);
      for (const c of children) process.stdout.write(`  ${c.id}  ${c.url}\n`);
      if (o.ssh) {
        process.stdout.write(
          `  git over SSH on ports ${sshBase}-${sshBase + n - 1}; host key for known_hosts: ${children[0]!.url}/ssh/host-key\n`,
        );
        process.stdout.write(
          `  register a key: git-replication key add <user> ~/.ssh/id_ed25519.pub, then git clone ssh://git@127.0.0.1:${sshBase}/<owner>/<repo>.git\n`,
        );
      } else if (sshWanted) {
        process.stdout.write(
          `  git over SSH is off: ports ${sshBase}-${sshBase + n - 1} are not free (choose them with --ssh-base-port)\n`,
        );
      }
      const token = await adminToken(
        data,
        children.map((c) => c.dataDir),
      );
      const first = children[0]!.url;
      const last = children[children.length - 1]!.url;
      // With --tls every client needs the throw-away CA: curl --cacert, git -c http.sslCAInfo.
      const curl = tls ? `curl --cacert ${tls.ca}` : 'curl';
      const gitc = tls ? `git -c http.sslCAInfo=${tls.ca}` : 'git';
      if (tls) process.stdout.write(`  CA certificate (trust it for these URLs only): ${tls.ca}\n`);
      if (token) {
        const push = first.replace(`${scheme}://`, `${scheme}://admin:${token}@`);
        process.stdout.write(`\nadmin token (also in ${join(data, 'admin-token')}): ${token}\n`);
        // Repos are private by default; this one is public so the clone needs no credentials.
        process.stdout.write(
          `\ntry:\n  ${curl} -X POST ${first}/repos -H "authorization: Bearer ${token}" -H 'content-type: application/json' -d '{"repo_id":"demo/hello","visibility":"public"}'\n`,
        );
        process.stdout.write(
          `  ${gitc} clone ${last}/demo/hello.git\n  cd hello && git commit --allow-empty -m first && ${gitc} push ${push}/demo/hello.git HEAD:main\n`,
        );
      } else {
        process.stdout.write(
          `\ntry:\n  ${curl} -X POST ${first}/repos -H 'content-type: application/json' -d '{"repo_id":"demo/hello"}'\n`,
        );
        process.stdout.write(`  ${gitc} clone ${last}/demo/hello.git\n`);
      }
      process.stdout.write('\nCtrl-C stops the cluster.\n');
      for (const c of children)
        supervise(
          c,
          startNode,
          () => stopping,
          async () => {
            const current = JSON.parse(await readFile(join(data, 'cluster.json'), 'utf8')) as ClusterFile;
            const nodes = current.nodes.map((e) => (e.id === c.id ? { ...e, pid: c.child.pid ?? -1 } : e));
            await writeClusterFile(data, { ...current, nodes });
          },
        );
      if (etcd) {
        const { logFile } = etcd;
        void etcd.exited.then((how) => {
          if (!stopping) process.stderr.write(`etcd exited (${how}): writes fail until it runs again; see ${logFile}\n`);
        });
      }
    });
}
