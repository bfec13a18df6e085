import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { git } from './git.js';

/** counter reads one labelled counter of a node's /metrics (0 when it was never counted). */
async function counter(nodeUrl: string, name: string, label: string, value: string): Promise<number> {
  const text = await (await fetch(`${nodeUrl}/metrics`)).text();
  const m = new RegExp(`^${name}\\{${label}="${value}"\\} (\\d+)`, 'm').exec(text);
  return m ? Number(m[1]) : 0;
}

/** packsShipped reads a node's count of push packs sent to its peers, by how (`gitrep_packs_shipped_total`). */
export function packsShipped(nodeUrl: string, how: 'teed' | 'staged' | 'with_prepare' | 'restaged'): Promise<number> {
  return counter(nodeUrl, 'gitrep_packs_shipped_total', 'how', how);
}

/** connectivityChecks reads a node's count of peer prepares' connectivity checks, by where they ran (`gitrep_connectivity_checks_total`). */
export function connectivityChecks(nodeUrl: string, at: 'copy' | 'prepare'): Promise<number> {
  return counter(nodeUrl, 'gitrep_connectivity_checks_total', 'at', at);
}

/** copyChecks reads a node's count of its checks of a push's tips in its copy, by how (`gitrep_copy_checks_total`). */
export function copyChecks(nodeUrl: string, by: 'links' | 'rev-list'): Promise<number> {
  return counter(nodeUrl, 'gitrep_copy_checks_total', 'by', by);
}

/** packFiles lists the paths in a replica's `objects/pack` whose name (and, for a `.keep`, content) `pred` accepts. */
export async function packFiles(replicaPath: string, pred: (name: string, keepContent: string) => boolean): Promise<string[]> {
  const dir = join(replicaPath, 'objects', 'pack');
  const found: string[] = [];
  for (const f of await readdir(dir)) {
    const content = f.endsWith('.keep') ? await readFile(join(dir, f), 'utf8').catch(() => '') : '';
    if (pred(f, content)) found.push(join(dir, f));
  }
  return found;
}

/** stagedKeeps lists a replica's `.keep` files of packs staged (ahead or during an upload) and not adopted by a prepare. */
export function stagedKeeps(replicaPath: string): Promise<string[]> {
  return packFiles(replicaPath, (f, content) => f.endsWith('.keep') && content.startsWith('replication stage'));
}

/** hasObject says whether a replica holds an object. */
export async function hasObject(replicaPath: string, oid: string): Promise<boolean> {
  return (await git(['cat-file', '-e', oid], { cwd: replicaPath })).code === 0;
}
