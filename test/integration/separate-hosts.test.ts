import type { ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { etcdArgs, etcdEnv } from '../../src/cluster/local-etcd.js';
import { serveArgs } from '../../src/cli/serve-args.js';
import { FAST_ENV, MAIN, waitFor, type RepoStatus } from '../helpers/cluster.js';
import { etcdBinary, skipWithoutEtcd } from '../helpers/etcd.js';
import { GIT_ENV, commitFile, git, gitOk, refsOf, workRepo } from '../helpers/git.js';
import { createNetLab, netnsUnavailable, removeStaleLabs, type LabHost, type NetLab } from '../helpers/netns.js';

/**
 * Three hosts, each a network namespace with its own address on a private bridge, each running
 * one etcd member and one node, as in OPERATIONS.md's 3-machine cluster. Nodes know only the
 * etcd endpoints (no --peers): they find each other through the store. The git client runs in
 * the root namespace, on the bridge's address. Then one host's link is cut and restored.
 */

const NO_NETNS = netnsUnavailable();
if (NO_NETNS !== null) process.stderr.write(`separate hosts test skipped: cannot create network namespaces (${NO_NETNS})\n`);
const SKIP = NO_NETNS !== null || skipWithoutEtcd();
const TITLE =
  NO_NETNS === null ? 'nodes on separate hosts' : `nodes on separate hosts (skipped: cannot create network namespaces: ${NO_NETNS})`;

const NODE_PORT = 3000;
const ETCD_CLIENT_PORT = 2379;
const ETCD_PEER_PORT = 2380;
const REPO = 'lab/site';

/** Proc is a process in a host, with the tail of its output for failure messages. */
interface Proc {
  readonly host: LabHost;
  readonly child: ChildProcess;
  log: string;
}

function track(host: LabHost, child: ChildProcess): Proc {
  const p: Proc = { host, child, log: '' };
  const keep = (d: Buffer): void => {
    p.log = (p.log + d.toString()).slice(-20_000);
  };
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  return p;
}

function nodeUrl(h: LabHost): string {
  return `http://${h.address}:${NODE_PORT}`;
}

async function getJson(url: string): Promise<Record<string, unknown>> {
  const res = await fetch(url, { signal: AbortSignal.timeout(3_000) });
  return (await res.json()) as Record<string, unknown>;
}

describe.skipIf(SKIP)(TITLE, () => {
  let lab: NetLab;
  let root: string;
  let work: string;
  const etcds: Proc[] = [];
  const nodes: Proc[] = [];

  const logs = (): string =>
    [...etcds, ...nodes]
      .map((p) => `--- ${p.host.name} ${p === nodes.find((n) => n.host === p.host) ? 'node' : 'etcd'}\n${p.log.slice(-3_000)}`)
      .join('\n');

  function startEtcd(h: LabHost, initialCluster: string): Proc {
    return track(
      h,
      lab.spawn(
        h,
        etcdBinary() ?? 'etcd',
        etcdArgs({
          name: h.name,
          host: h.address,
          dataDir: join(root, `etcd-${h.name}`),
          clientPort: ETCD_CLIENT_PORT,
          peerPort: ETCD_PEER_PORT,
          initialCluster,
          clusterToken: root,
          fastElection: true,
        }),
        { stdio: ['ignore', 'pipe', 'pipe'], env: etcdEnv() },
      ),
    );
  }

  /** startNode runs a node on its host's address, or on every address of its host (`0.0.0.0`, no --advertise-url). */
  function startNode(h: LabHost, store: string, listen: string): Proc {
    return track(
      h,
      lab.spawn(
        h,
        process.execPath,
        serveArgs(MAIN, { id: h.name, host: listen, port: NODE_PORT, dataDir: join(root, `node-${h.name}`), store, replicationFactor: 3 }),
        { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...FAST_ENV, PEER_URLS: '' } },
      ),
    );
  }

  /** liveSeen is the set of node ids node `h` counts live. */
  async function liveSeen(h: LabHost): Promise<Set<string>> {
    const health = (await getJson(`${nodeUrl(h)}/health`)) as { peer_nodes?: Array<{ id: string; live: boolean }> };
    return new Set((health.peer_nodes ?? []).filter((p) => p.live).map((p) => p.id));
  }

  async function repoStatus(h: LabHost): Promise<RepoStatus> {
    return (await getJson(`${nodeUrl(h)}/repos/${REPO}`)) as unknown as RepoStatus;
  }

  async function push(h: LabHost, n: number): Promise<{ code: number; stderr: string }> {
    await commitFile(work, 'counter.txt', `${n}\n`, `change ${n}`);
    return git(['push', `${nodeUrl(h)}/${REPO}.git`, 'main'], { cwd: work, timeoutMs: 60_000 });
  }

  /** gitOn runs the git client inside host `h`'s namespace. */
  function gitOn(h: LabHost, args: string[]): Promise<{ code: number | null; stderr: string }> {
    return new Promise((resolve) => {
      const child = lab.spawn(h, 'git', args, { cwd: work, env: GIT_ENV, stdio: ['ignore', 'ignore', 'pipe'] });
      let stderr = '';
      child.stderr?.on('data', (d: Buffer) => {
        stderr += d.toString();
      });
      const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
      child.once('exit', (code) => {
        clearTimeout(timer);
        resolve({ code, stderr });
      });
    });
  }

  /** cloneRefs clones the repo through host `h` and returns its refs as the clone sees them. */
  async function cloneRefs(h: LabHost): Promise<string> {
    const dir = join(root, `clone-${h.name}-${Date.now()}`);
    await gitOk(['clone', '-q', '--mirror', `${nodeUrl(h)}/${REPO}.git`, dir], { timeoutMs: 60_000 });
    return refsOf(dir);
  }

  beforeAll(async () => {
    await removeStaleLabs();
    root = await mkdtemp(join(tmpdir(), 'gitrep-hosts-'));
    lab = await createNetLab(3);
    const initialCluster = lab.hosts.map((h) => `${h.name}=http://${h.address}:${ETCD_PEER_PORT}`).join(',');
    for (const h of lab.hosts) etcds.push(startEtcd(h, initialCluster));
    try {
      await waitFor(
        async () => {
          for (const e of etcds) if (e.child.exitCode !== null) throw new Error(`etcd on ${e.host.name} exited`);
          const healthy = await Promise.all(
            lab.hosts.map(async (h) => (await getJson(`http://${h.address}:${ETCD_CLIENT_PORT}/health`)).health === 'true'),
          );
          return healthy.every(Boolean);
        },
        20_000,
        'etcd members healthy',
      );
      // Every node is given the three etcd endpoints and nothing else about the cluster.
      const store = `etcd://${lab.hosts.map((h) => `${h.address}:${ETCD_CLIENT_PORT}`).join(',')}`;
      // h2 listens on 0.0.0.0 without --advertise-url: it must advertise its own address, not loopback.
      for (const h of lab.hosts) nodes.push(startNode(h, store, h.name === 'h2' ? '0.0.0.0' : h.address));
      const ids = lab.hosts.map((h) => h.name);
      await waitFor(
        async () => {
          for (const h of lab.hosts) {
            const seen = await liveSeen(h);
            if (ids.some((id) => id !== h.name && !seen.has(id))) return false;
          }
          return true;
        },
        30_000,
        'every node sees the others live',
      );
    } catch (err) {
      throw new Error(`${err instanceof Error ? err.message : String(err)}\n${logs()}`);
    }
    work = await workRepo();
  });

  afterAll(async () => {
    await lab?.cleanup();
    if (root) await rm(root, { recursive: true, force: true });
    if (work) await rm(work, { recursive: true, force: true });
  });

  it('pushes and clones across hosts; a host cut off misses pushes and repairs when its link returns', async () => {
    const [a, b, c] = lab.hosts as [LabHost, LabHost, LabHost];
    try {
      // Each node advertises its own address (h2 too, listening on 0.0.0.0), learnt by the others through etcd alone.
      const status = (await getJson(`${nodeUrl(b)}/status.json`)) as { nodes: Array<{ id: string; url?: string }> };
      expect(status.nodes.map((n) => [n.id, n.url]).sort()).toEqual(lab.hosts.map((h) => [h.name, nodeUrl(h)]));

      const created = await fetch(`${nodeUrl(a)}/repos`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ repo_id: REPO }),
      });
      expect(created.status, await created.text()).toBe(201);
      const first = await push(a, 1);
      expect(first.code, first.stderr).toBe(0);
      const expected = await refsOf(work);
      expect(await cloneRefs(b)).toBe(expected);
      expect(await cloneRefs(c)).toBe(expected);

      await lab.cut(c);
      // C is unreachable: its etcd member and its node are gone from the others' point of view.
      await expect(fetch(`${nodeUrl(c)}/health`, { signal: AbortSignal.timeout(1_000) })).rejects.toThrow();
      // Once etcd's majority has a leader (an election if c's member led), the nodes must carry on
      // although every node still lists c's etcd member among its endpoints.
      await waitFor(
        async () => (await getJson(`http://${a.address}:${ETCD_CLIENT_PORT}/health`)).health === 'true',
        10_000,
        'etcd leader without c',
      );
      for (let n = 2; n <= 4; n++) {
        const r = await push(a, n);
        expect(r.code, `push ${n} with host c cut off: ${r.stderr}`).toBe(0);
      }
      // On its own side of the cut, c takes no write: it cannot reach a majority of etcd (I6).
      await commitFile(work, 'cut-off.txt', 'c\n', 'pushed to the cut-off host');
      const refused = await gitOn(c, ['push', `${nodeUrl(c)}/${REPO}.git`, 'main']);
      expect(refused.code, refused.stderr).not.toBe(0);
      expect(refused.stderr).toMatch(/coordination store unavailable|503/);
      expect(nodes.find((p) => p.host === c)?.child.exitCode).toBeNull();
      await gitOk(['reset', '-q', '--hard', 'HEAD~1'], { cwd: work });
      const during = await repoStatus(a);
      const expectedAfter = await refsOf(work);
      expect(await cloneRefs(b)).toBe(expectedAfter);
      const cDuring = during.replicas.find((r) => r.node === c.name);
      expect(cDuring?.generation ?? 0).toBeLessThan(during.generation);
      expect(
        during.replicas
          .filter((r) => r.state === 'in_sync' && r.generation === during.generation)
          .map((r) => r.node)
          .sort(),
      ).toEqual([a.name, b.name]);

      await lab.restore(c);
      let repaired: RepoStatus | null = null;
      await waitFor(
        async () => {
          repaired = await repoStatus(a);
          const rc = repaired.replicas.find((r) => r.node === c.name);
          return rc?.state === 'in_sync' && rc.generation === during.generation;
        },
        30_000,
        'host c in sync again',
      );
      expect(repaired!.generation).toBe(during.generation);
      // The replica on c's own disk has the pushes it missed, and c serves them.
      expect(await refsOf(join(root, `node-${c.name}`, 'repos', `${REPO}.git`))).toBe(expectedAfter);
      expect(await cloneRefs(c)).toBe(expectedAfter);
    } catch (err) {
      throw new Error(`${err instanceof Error ? err.message : String(err)}\n${logs()}`, { cause: err });
    }
  });
});
