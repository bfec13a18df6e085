import { execFile, spawn, spawnSync, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { randomBytes, randomInt } from 'node:crypto';

/**
 * A private network made of Linux network namespaces: each "host" is a namespace with its own
 * loopback and one veth whose other end is a port of a bridge in the root namespace. The bridge
 * has the subnet's `.1`, so clients in the test process reach every host; hosts reach each
 * other through the bridge. Cutting a host takes its bridge port down: the host keeps its
 * address and its own loopback, and nothing gets in or out, as when a cable is pulled.
 *
 * Names: namespaces `gitrep-<suffix>-<pid>-<host>` (the pid of the test process that made them,
 * so a later run can tell a crashed run's leftovers from a live run's), interfaces
 * `grx<suffix><b|hN>` (15 characters at most, the kernel's limit).
 */

const NETNS_PREFIX = 'gitrep-';
const LINK_PREFIX = 'grx';
const NETNS_PATTERN = /^gitrep-([0-9a-f]{6})-(\d+)-/;

/** LabHost is one namespace of a NetLab. */
export interface LabHost {
  /** name is the host's short name in the test (`h1`, `h2`, …). */
  readonly name: string;
  /** netns is the namespace's name (for `ip netns exec`). */
  readonly netns: string;
  /** address is the host's IPv4 address on the lab's bridge. */
  readonly address: string;
  /** port is the veth end on the bridge; down means the host is cut off. */
  readonly port: string;
}

/** NetLab is a bridge and its hosts, made for one test run. */
export interface NetLab {
  /** gateway is the bridge's own address (the root namespace's, where the test's git runs). */
  readonly gateway: string;
  readonly hosts: readonly LabHost[];
  /** spawn runs a command inside a host's namespace (`ip netns exec`, which execs it: the pid is the command's). */
  spawn(host: LabHost, command: string, args: readonly string[], options?: SpawnOptions): ChildProcess;
  /** cut takes a host's bridge port down: no packet reaches or leaves the host. */
  cut(host: LabHost): Promise<void>;
  /** restore brings a cut host's bridge port up again. */
  restore(host: LabHost): Promise<void>;
  /** cleanup kills every process in the namespaces, then deletes the namespaces and the bridge; safe to call twice. */
  cleanup(): Promise<void>;
}

function ip(args: readonly string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile('ip', args, { timeout: 10_000 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`ip ${args.join(' ')}: ${stderr.trim() || err.message}`));
      else resolve(stdout);
    });
  });
}

/** ipQuiet runs `ip` for cleanup: failures (already gone) are ignored. */
function ipQuiet(args: readonly string[]): Promise<void> {
  return ip(args).then(
    () => undefined,
    () => undefined,
  );
}

let unavailable: string | null | undefined;

/**
 * netnsUnavailable says why network namespaces cannot be made here (no `ip`, not root, a
 * container without CAP_SYS_ADMIN or CAP_NET_ADMIN), or null when they can: it makes and
 * deletes a throw-away namespace and veth pair. Synchronous, for `describe.skipIf`.
 */
export function netnsUnavailable(): string | null {
  if (unavailable !== undefined) return unavailable;
  const sfx = randomBytes(3).toString('hex');
  const probe = `${NETNS_PREFIX}${sfx}-${process.pid}-probe`;
  const run = (args: string[]): string | null => {
    const r = spawnSync('ip', args, { encoding: 'utf8', timeout: 10_000 });
    if (r.error) return `ip ${args.join(' ')}: ${r.error.message}`;
    return r.status === 0 ? null : `ip ${args.join(' ')}: ${(r.stderr || '').trim() || `exit ${r.status}`}`;
  };
  unavailable = run(['netns', 'add', probe]);
  if (unavailable === null) {
    unavailable = run(['link', 'add', `${LINK_PREFIX}${sfx}p0`, 'type', 'veth', 'peer', 'name', `${LINK_PREFIX}${sfx}p1`, 'netns', probe]);
    run(['link', 'del', `${LINK_PREFIX}${sfx}p0`]);
    run(['netns', 'del', probe]);
  }
  return unavailable;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

async function killNamespaceProcesses(netns: string): Promise<void> {
  const pids = (await ip(['netns', 'pids', netns]).catch(() => ''))
    .split('\n')
    .map(Number)
    .filter((p) => p > 0);
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
}

/**
 * removeStaleLabs deletes what earlier runs that died without cleaning up left behind: their
 * namespaces (and the processes in them) and `grx…` interfaces of no live run.
 */
export async function removeStaleLabs(): Promise<void> {
  const live = new Set<string>();
  for (const line of (await ip(['netns', 'list']).catch(() => '')).split('\n')) {
    const name = line.split(' ')[0] ?? '';
    const m = NETNS_PATTERN.exec(name);
    if (!m) continue;
    if (alive(Number(m[2]))) {
      live.add(m[1] ?? '');
      continue;
    }
    await killNamespaceProcesses(name);
    await ipQuiet(['netns', 'del', name]);
  }
  for (const line of (await ip(['-o', 'link', 'show']).catch(() => '')).split('\n')) {
    const name = /^\d+: ([^:@]+)/.exec(line)?.[1] ?? '';
    if (name.startsWith(LINK_PREFIX) && !live.has(name.slice(LINK_PREFIX.length, LINK_PREFIX.length + 6)))
      await ipQuiet(['link', 'del', name]);
  }
}

/** freeSubnet picks a 10.231.X.0/24 that no address or route of this machine uses. */
async function freeSubnet(): Promise<string> {
  const used = `${await ip(['-4', '-o', 'addr', 'show'])}\n${await ip(['-4', 'route', 'show', 'table', 'all'])}`;
  for (let attempt = 0; attempt < 100; attempt++) {
    const subnet = `10.231.${randomInt(0, 256)}`;
    // A wider route (10.0.0.0/8 to a VPN, say) does not matter: the bridge's /24 is more specific.
    if (!used.includes(`${subnet}.`)) return subnet;
  }
  throw new Error('no free 10.231.X.0/24 subnet');
}

/**
 * createNetLab makes a bridge with `hostCount` hosts (`h1`…, addresses `.11`, `.12`, …) on a
 * fresh private subnet; it removes what it made if any step fails.
 */
export async function createNetLab(hostCount: number): Promise<NetLab> {
  const sfx = randomBytes(3).toString('hex');
  const subnet = await freeSubnet();
  const bridge = `${LINK_PREFIX}${sfx}b`;
  const hosts: LabHost[] = Array.from({ length: hostCount }, (_, i) => ({
    name: `h${i + 1}`,
    netns: `${NETNS_PREFIX}${sfx}-${process.pid}-h${i + 1}`,
    address: `${subnet}.${11 + i}`,
    port: `${LINK_PREFIX}${sfx}h${i + 1}`,
  }));
  const children = new Set<ChildProcess>();
  let cleaned = false;
  // A test process that dies without afterAll must not leave the network behind either.
  const onExit = (): void => {
    for (const h of hosts) spawnSync('ip', ['netns', 'del', h.netns]);
    spawnSync('ip', ['link', 'del', bridge]);
  };
  process.once('exit', onExit);
  const lab: NetLab = {
    gateway: `${subnet}.1`,
    hosts,
    spawn(host, command, args, options = {}) {
      const child = spawn('ip', ['netns', 'exec', host.netns, command, ...args], options);
      children.add(child);
      child.once('exit', () => children.delete(child));
      return child;
    },
    cut: (host) => ip(['link', 'set', host.port, 'down']).then(() => undefined),
    restore: (host) => ip(['link', 'set', host.port, 'up']).then(() => undefined),
    async cleanup() {
      if (cleaned) return;
      cleaned = true;
      const exits = [...children].map(
        (c) =>
          new Promise<void>((resolve) => {
            if (c.exitCode !== null || c.signalCode !== null) resolve();
            else c.once('exit', () => resolve());
          }),
      );
      for (const c of children) c.kill('SIGKILL');
      for (const h of hosts) await killNamespaceProcesses(h.netns);
      await Promise.race([Promise.all(exits), new Promise((r) => setTimeout(r, 5_000))]);
      // Deleting a namespace deletes the veth end in it, and with it the bridge port.
      for (const h of hosts) await ipQuiet(['netns', 'del', h.netns]);
      for (const h of hosts) await ipQuiet(['link', 'del', h.port]);
      await ipQuiet(['link', 'del', bridge]);
      process.removeListener('exit', onExit);
    },
  };
  try {
    // Namespaces first: they name this live process, so a run starting meanwhile never takes
    // this run's bridge for a crashed run's leftover (removeStaleLabs).
    for (const h of hosts) await ip(['netns', 'add', h.netns]);
    await ip(['link', 'add', bridge, 'type', 'bridge']);
    await ip(['addr', 'add', `${lab.gateway}/24`, 'dev', bridge]);
    await ip(['link', 'set', bridge, 'up']);
    for (const h of hosts) {
      const inner = `${LINK_PREFIX}${sfx}i${h.name.slice(1)}`;
      await ip(['link', 'add', h.port, 'type', 'veth', 'peer', 'name', inner, 'netns', h.netns]);
      await ip(['link', 'set', h.port, 'master', bridge]);
      await ip(['link', 'set', h.port, 'up']);
      const inNs = (args: string[]): Promise<string> => ip(['-n', h.netns, ...args]);
      await inNs(['link', 'set', 'lo', 'up']);
      await inNs(['addr', 'add', `${h.address}/24`, 'dev', inner]);
      await inNs(['link', 'set', inner, 'up']);
    }
  } catch (err) {
    await lab.cleanup();
    throw err;
  }
  return lab;
}
