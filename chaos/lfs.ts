/**
 * Git LFS under chaos: a client that uploads objects through random nodes while faults run, and
 * reads back ones already acknowledged; after the faults heal, every acknowledged object must be
 * on every replica of its repository (the sync pass converged) and served, with its content,
 * through every node. An object answered 200 and missing after is a lost write.
 */
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { TestCluster } from './cluster.js';
import type { Violation } from './checker.js';
import type { Outcome } from './history.js';
import type { Rng } from './rng.js';
import type { ClusterView } from './workload.js';

/** LfsUpload is one recorded upload: what was sent where, and what the client learnt. */
export interface LfsUpload {
  readonly repo: string;
  readonly oid: string;
  readonly size: number;
  readonly node: number;
  readonly outcome: Outcome;
  readonly detail: string;
}

/** LfsHistory is what the LFS client did: its uploads, and reads whose content was not what was uploaded. */
export interface LfsHistory {
  readonly uploads: LfsUpload[];
  /** reads counts the reads of acknowledged objects answered 200; wrongReads those whose content differed. */
  reads: number;
  readonly wrongReads: string[];
}

function sha256(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex');
}

/** content makes an object's bytes: mostly small, sometimes a few MiB (the size from the run's randomness). */
function content(rng: Rng): Buffer {
  return randomBytes(rng.next() < 0.1 ? 1 + Math.floor(rng.next() * 3 * 1024 * 1024) : Math.floor(rng.next() * 64 * 1024));
}

/**
 * runLfsClient uploads and reads LFS objects until `deadline`: each upload a PUT through a node
 * the view picks (`ok` on 200, `failed` on a 4xx or 503 the node answered, `unknown` when the
 * answer did not come), each read a GET of an acknowledged object whose 200 must carry its content
 * (a 404 or 503 while faults run is allowed: the replicas holding it may be cut off).
 */
export async function runLfsClient(
  c: TestCluster,
  view: ClusterView,
  rng: Rng,
  repos: readonly string[],
  deadline: () => number,
  now: () => number,
  timeoutMs: number,
): Promise<LfsHistory> {
  const h: LfsHistory = { uploads: [], reads: 0, wrongReads: [] };
  while (now() < deadline()) {
    const repo = rng.pick(repos);
    const node = view.pickNode(rng);
    const acked = h.uploads.filter((u) => u.outcome === 'ok');
    if (acked.length > 0 && rng.next() < 0.3) {
      const u = rng.pick(acked);
      try {
        const res = await fetch(`${c.url(node)}/${u.repo}.git/info/lfs/objects/${u.oid}`, { signal: AbortSignal.timeout(timeoutMs) });
        if (res.status === 200) {
          const got = Buffer.from(await res.arrayBuffer());
          h.reads++;
          if (sha256(got) !== u.oid) h.wrongReads.push(`${u.repo} ${u.oid} through node-${node}: ${got.length} bytes of other content`);
        } else await res.body?.cancel();
      } catch {
        // a read cut off by a fault says nothing
      }
      continue;
    }
    const body = content(rng);
    const oid = sha256(body);
    let outcome: Outcome = 'unknown';
    let detail = '';
    try {
      const res = await fetch(`${c.url(node)}/${repo}.git/info/lfs/objects/${oid}`, {
        method: 'PUT',
        headers: { 'content-type': 'application/octet-stream' },
        body,
        signal: AbortSignal.timeout(timeoutMs),
      });
      const text = await res.text();
      outcome = res.status === 200 ? 'ok' : res.status < 600 && res.status !== 502 ? 'failed' : 'unknown';
      detail = `${res.status} ${text.slice(0, 200)}`;
    } catch (err) {
      detail = err instanceof Error ? err.message : String(err);
    }
    h.uploads.push({ repo, oid, size: body.length, node, outcome, detail });
  }
  return h;
}

/**
 * checkLfs judges an LFS history on the healed cluster: each acknowledged object on every replica
 * of its repository's set (waiting up to `settleMs` for the sync passes), and served with its
 * content through every node; reads during the run saw only uploaded content.
 */
export async function checkLfs(c: TestCluster, h: LfsHistory, settleMs: number): Promise<Violation[]> {
  const out: Violation[] = [];
  for (const w of h.wrongReads) out.push({ kind: 'lost-write', repo: w.split(' ')[0] ?? '', message: `LFS read of other content: ${w}` });
  const acked = h.uploads.filter((u) => u.outcome === 'ok');
  const missing = async (): Promise<string[]> => {
    const gaps: string[] = [];
    for (const u of acked) {
      const status = (await c.api(1, 'GET', `/repos/${u.repo}`)).json as { incarnation?: string; replicas?: Array<{ node: string }> };
      for (const r of status.replicas ?? []) {
        const n = c.nodes.find((x) => x.id === r.node);
        const path = n && join(n.dataDir, 'lfs', status.incarnation ?? '-', u.oid.slice(0, 2), u.oid.slice(2, 4), u.oid);
        if (!path || !existsSync(path) || statSync(path).size !== u.size) gaps.push(`${u.repo} ${u.oid.slice(0, 12)} not on ${r.node}`);
      }
    }
    return gaps;
  };
  const until = Date.now() + settleMs;
  let gaps = await missing();
  while (gaps.length > 0 && Date.now() < until) {
    await new Promise((r) => setTimeout(r, 1_000));
    gaps = await missing();
  }
  if (gaps.length > 0)
    out.push({
      kind: 'not-converged',
      repo: gaps[0]!.split(' ')[0]!,
      message: `${gaps.length} acknowledged LFS object(s) missing from replicas after ${settleMs / 1000} s: ${gaps.slice(0, 5).join('; ')}`,
    });
  for (const u of acked) {
    for (let i = 1; i <= c.nodes.length; i++) {
      const res = await fetch(`${c.url(i)}/${u.repo}.git/info/lfs/objects/${u.oid}`).catch(() => null);
      const got = res?.status === 200 ? Buffer.from(await res.arrayBuffer()) : null;
      if (got === null || sha256(got) !== u.oid)
        out.push({
          kind: 'lost-write',
          repo: u.repo,
          message: `acknowledged LFS object ${u.oid.slice(0, 12)} (${u.size} bytes, through node-${u.node}) not served through node-${i}: ${res?.status ?? 'no answer'}`,
        });
    }
  }
  return out;
}

/** lfsSummary is the report's line on the LFS client. */
export function lfsSummary(h: LfsHistory): string {
  const n = (o: Outcome): number => h.uploads.filter((u) => u.outcome === o).length;
  return `lfs: ${h.uploads.length} uploads (ok ${n('ok')}, failed ${n('failed')}, unknown ${n('unknown')}), ${h.reads} reads of acknowledged objects`;
}
