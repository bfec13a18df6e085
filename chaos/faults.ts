/**
 * The fault schedule of a chaos run, driven by the run's seed: one fault at a time, with short
 * gaps, until the deadline; the kinds come in shuffled rounds (every kind once per round). Kinds:
 * - `kill`: kill -9 a node, restart it after a while;
 * - `failpoint`: restart a node with one fail point armed to crash
 *   (`GIT_REPLICATION_FAILPOINTS=<name>=crash`, cycling through every name), push through it
 *   (or, for participant points, through another replica), wait for the crash, restart it clean;
 * - `pause`: SIGSTOP a node past its lock lease (> LOCK_TTL_MS), then SIGCONT;
 * - `partition`: cut the node off from its peers for a few seconds: its own proxy black-holes
 *   everything inbound, and every other node's proxy black-holes the connections it opens
 *   (found by socket owner, see sockets.ts). Clients and the store still reach it: a minority
 *   partition of the peer network;
 * - `slow`: delay the node's inbound peer link;
 * - `disk-full`: restart a node with a free-space minimum above its disk (`MIN_FREE_DISK`), so it
 *   refuses every new transaction as a full disk does, for a few seconds; then restart it clean.
 *   (A real filled file system is tested in test/integration/full-disk.test.ts.)
 * - `store-partition` (runs on etcd): a majority of the nodes lose the store for a few seconds
 *   (their links to it black-holed), while the others keep it;
 * - `store-restart` (runs on etcd): the store is stopped (SIGTERM or SIGKILL) and started again
 *   on the same data after a while.
 */
import { FAILPOINT_NAMES } from '../src/replication/failpoints.js';
import type { TestCluster } from './cluster.js';
import type { FaultProxy } from './proxy.js';
import type { Rng } from './rng.js';
import type { Client } from './workload.js';

/** FaultKind names one kind of fault. */
export type FaultKind = 'kill' | 'failpoint' | 'pause' | 'partition' | 'slow' | 'disk-full' | 'store-partition' | 'store-restart';

/** ALL_FAULTS lists every kind. */
export const ALL_FAULTS: readonly FaultKind[] = [
  'kill',
  'failpoint',
  'pause',
  'partition',
  'slow',
  'disk-full',
  'store-partition',
  'store-restart',
];

/** STORE_FAULTS are the kinds that need a store the run controls (etcd). */
export const STORE_FAULTS: readonly FaultKind[] = ['store-partition', 'store-restart'];

/** StoreOutage is a window (on the injector's `now` clock) in which `nodes` could not reach the store. */
export interface StoreOutage {
  readonly from: number;
  readonly to: number;
  readonly nodes: readonly number[];
}

/** StoreControl breaks the coordination store of a run on etcd. */
export interface StoreControl {
  /** proxies[i-1] is node i's link to the store. */
  readonly proxies: readonly FaultProxy[];
  /** stop ends the store process: SIGKILL when `hard`, else SIGTERM. */
  stop(hard: boolean): Promise<void>;
  /** start starts it again on the same ports and data, and waits until it is healthy. */
  start(): Promise<void>;
  running(): boolean;
}

/** FaultEvent is one injected fault, for the report. */
export interface FaultEvent {
  readonly at: number;
  readonly kind: FaultKind;
  readonly node: number;
  readonly detail: string;
}

/** FaultOptions configure the injector. */
export interface FaultOptions {
  readonly cluster: TestCluster;
  readonly rng: Rng;
  /** proxies[i-1] fronts node i; null when the run has no proxies (no partition, no slow). */
  readonly proxies: readonly FaultProxy[] | null;
  /** store is the store the run controls (etcd), or null (store faults are skipped). */
  readonly store?: StoreControl | null;
  readonly kinds: readonly FaultKind[];
  readonly lockTtlMs: number;
  readonly repos: readonly string[];
  /** client is the injector's own workload client, which pushes through armed nodes. */
  readonly client: Client;
  readonly now: () => number;
  readonly log: (line: string) => void;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** FaultInjector runs the schedule and heals everything at the end. */
export class FaultInjector {
  /** down holds nodes that are killed or stopped now (clients mostly avoid them). */
  readonly down = new Set<number>();
  readonly events: FaultEvent[] = [];
  /** storeOutages are the windows in which some nodes could not reach the store. */
  readonly storeOutages: StoreOutage[] = [];
  /** crashes counts fail points that did crash their node, by name. */
  readonly crashes = new Map<string, number>();
  private readonly armed = new Set<number>();
  private failpointCycle: string[] = [];
  private kindCycle: FaultKind[] = [];

  constructor(private readonly opts: FaultOptions) {}

  private get n(): number {
    return this.opts.cluster.nodes.length;
  }

  /** allNodes numbers every node, 1..n. */
  private get allNodes(): number[] {
    return Array.from({ length: this.n }, (_, i) => i + 1);
  }

  private record(kind: FaultKind, node: number, detail: string): void {
    this.events.push({ at: this.opts.now(), kind, node, detail });
    this.opts.log(`fault ${kind} ${node === 0 ? 'store' : `node-${node}`}: ${detail}`);
  }

  /** run injects faults until `deadline()` (on the `now` clock); bounded by a fault count too. */
  async run(deadlineOf: () => number, maxFaults = 10_000): Promise<void> {
    const { rng, kinds, proxies } = this.opts;
    const store = this.opts.store ?? null;
    const usable = kinds.filter(
      (k) => (proxies !== null || (k !== 'partition' && k !== 'slow')) && (store !== null || !STORE_FAULTS.includes(k)),
    );
    if (usable.length === 0) return;
    for (let i = 0; i < maxFaults && this.opts.now() < deadlineOf(); i++) {
      await sleep(rng.int(200, 1200));
      const deadline = deadlineOf();
      if (this.opts.now() >= deadline) break;
      // Kinds come in shuffled rounds, each kind once per round, so a short run still sees every kind.
      if (this.kindCycle.length === 0) this.kindCycle = rng.shuffle(usable);
      const kind = this.kindCycle.shift()!;
      const node = rng.int(1, this.n);
      try {
        await this.inject(kind, node, deadline);
      } catch (err) {
        this.opts.log(`fault ${kind} node-${node} failed: ${err instanceof Error ? err.message : String(err)}`);
      }
    }
  }

  private async inject(kind: FaultKind, node: number, deadline: number): Promise<void> {
    const { cluster, rng, proxies, lockTtlMs } = this.opts;
    const until = (ms: number): number => Math.max(200, Math.min(ms, deadline - this.opts.now() + 500));
    switch (kind) {
      case 'kill': {
        const downFor = rng.int(300, 2500);
        this.record(kind, node, `kill -9, restart after ${downFor} ms`);
        this.down.add(node);
        await cluster.kill(node);
        await sleep(until(downFor));
        await this.restartClean(node);
        return;
      }
      case 'disk-full': {
        const ms = rng.int(1500, 5000);
        this.record(kind, node, `disk full (free-space minimum above the disk) for ${ms} ms`);
        this.armed.add(node);
        await cluster.restart(node, { MIN_FREE_DISK: '100000000g' });
        await sleep(until(ms));
        await this.restartClean(node);
        return;
      }
      case 'pause': {
        const ms = lockTtlMs + rng.int(300, 1500);
        this.record(kind, node, `SIGSTOP for ${ms} ms (lock lease ${lockTtlMs} ms)`);
        this.down.add(node);
        cluster.pause(node);
        await sleep(ms);
        cluster.resume(node);
        this.down.delete(node);
        return;
      }
      case 'partition': {
        const ms = rng.int(1500, 4000);
        const both = proxies!.some((p) => p.identify !== null);
        this.record(kind, node, `${both ? 'cut off from its peers (both directions)' : 'inbound peer link black-holed'} for ${ms} ms`);
        const id = `node-${node}`;
        proxies![node - 1]!.setMode({ kind: 'blackhole' });
        if (both)
          proxies!.forEach((p, i) => {
            if (i !== node - 1) p.block(id);
          });
        await sleep(until(ms));
        proxies![node - 1]!.setMode({ kind: 'pass' });
        if (both) proxies!.forEach((p) => p.unblock(id));
        return;
      }
      case 'slow': {
        const ms = rng.int(1500, 4000);
        const delay = rng.int(30, 300);
        this.record(kind, node, `inbound peer link delayed ${delay} ms for ${ms} ms`);
        proxies![node - 1]!.setMode({ kind: 'delay', ms: delay });
        await sleep(until(ms));
        proxies![node - 1]!.setMode({ kind: 'pass' });
        return;
      }
      case 'store-partition': {
        const store = this.opts.store!;
        const ms = rng.int(1500, 6000);
        const majority = rng
          .shuffle(this.allNodes)
          .slice(0, Math.floor(this.n / 2) + 1)
          .sort((a, b) => a - b);
        this.record(kind, 0, `nodes ${majority.join(', ')} cut off from the store for ${ms} ms`);
        const from = this.opts.now();
        for (const i of majority) store.proxies[i - 1]!.setMode({ kind: 'blackhole' });
        try {
          await sleep(until(ms));
        } finally {
          for (const i of majority) store.proxies[i - 1]!.setMode({ kind: 'pass' });
          this.storeOutages.push({ from, to: this.opts.now(), nodes: majority });
        }
        return;
      }
      case 'store-restart': {
        const store = this.opts.store!;
        const hard = rng.next() < 0.5;
        const downFor = rng.int(300, 4000);
        this.record(kind, 0, `store ${hard ? 'killed (SIGKILL)' : 'stopped (SIGTERM)'}, started again after ${downFor} ms`);
        const from = this.opts.now();
        try {
          await store.stop(hard);
          await sleep(until(downFor));
          await store.start();
        } finally {
          this.storeOutages.push({ from, to: this.opts.now(), nodes: this.allNodes });
        }
        return;
      }
      case 'failpoint':
        return this.failpoint();
    }
  }

  /** failpoint arms the next fail point on a replica, drives a push into it, and restarts it clean. */
  private async failpoint(): Promise<void> {
    const { cluster, rng, repos, client } = this.opts;
    if (this.failpointCycle.length === 0) this.failpointCycle = rng.shuffle(FAILPOINT_NAMES);
    const name = this.failpointCycle.shift()!;
    const repo = rng.pick(repos);
    const up = this.allNodes.find((i) => !this.down.has(i)) ?? 1;
    const status = await cluster.repoStatus(up, repo);
    const replicas = status.replicas.map((r) => Number(r.node.slice('node-'.length)));
    const victim = rng.pick(replicas);
    const coordinatorSide = name.startsWith('coordinator.');
    const others = replicas.filter((r) => r !== victim);
    const via = coordinatorSide ? victim : rng.pick(others.length > 0 ? others : replicas);
    this.record('failpoint', victim, `${name}=crash, push to ${repo} through node-${via}`);
    this.armed.add(victim);
    const started = await cluster.restart(victim, { GIT_REPLICATION_FAILPOINTS: `${name}=crash` }).then(
      () => true,
      (err: unknown) => {
        if (cluster.node(victim).proc?.signalCode !== 'SIGKILL') throw err;
        return false;
      },
    );
    if (!started) {
      // Its start-up passed the fail point (resolving a transaction it had left in doubt) and
      // crashed there: the crash this fault asks for, on the way up.
      this.opts.log(`fail point ${name} on node-${victim} crashed it while it started`);
      this.crashes.set(name, (this.crashes.get(name) ?? 0) + 1);
      this.down.add(victim);
      await this.restartClean(victim);
      return;
    }
    // The push must find the victim's replica in sync (a coordinator must be one; a participant
    // behind would refuse before the fail point).
    const deadline = Date.now() + 8_000;
    while (Date.now() < deadline) {
      const st = await cluster.repoStatus(via, repo).catch(() => null);
      if (st?.replicas.find((r) => r.node === `node-${victim}`)?.state === 'in_sync') break;
      await sleep(100);
    }
    // A fresh view first, so the push is not refused by its own stale lease before it reaches the node.
    await client.fetch(repo, via);
    await client.ffPush(repo, 'main', via, 2);
    const crashed = await cluster.exited(victim, 8_000).then(
      () => true,
      () => false,
    );
    if (crashed) {
      this.crashes.set(name, (this.crashes.get(name) ?? 0) + 1);
      this.down.add(victim);
      await sleep(rng.int(100, 1000));
    } else {
      this.opts.log(`fail point ${name} on node-${victim} was not hit`);
    }
    await this.restartClean(victim);
  }

  private async restartClean(node: number): Promise<void> {
    await this.opts.cluster.restart(node, { GIT_REPLICATION_FAILPOINTS: '', MIN_FREE_DISK: '' });
    this.armed.delete(node);
    this.down.delete(node);
  }

  /** heal ends every fault: resumes stopped nodes, opens proxies, restarts dead or armed nodes. */
  async heal(): Promise<void> {
    const { cluster, proxies } = this.opts;
    for (let i = 1; i <= this.n; i++) cluster.resume(i);
    for (const p of proxies ?? []) {
      p.setMode({ kind: 'pass' });
      for (let i = 1; i <= this.n; i++) p.unblock(`node-${i}`);
    }
    const store = this.opts.store;
    if (store) {
      for (const p of store.proxies) p.setMode({ kind: 'pass' });
      if (!store.running()) {
        this.opts.log('heal: starting the store');
        const from = this.opts.now();
        await store.start();
        this.storeOutages.push({ from, to: this.opts.now(), nodes: this.allNodes });
      }
    }
    for (let i = 1; i <= this.n; i++) {
      const p = cluster.node(i).proc;
      const dead = !p || p.exitCode !== null || p.signalCode !== null;
      if (dead || this.armed.has(i)) {
        this.opts.log(`heal: restarting node-${i}`);
        await this.restartClean(i);
      }
    }
    this.down.clear();
  }
}
