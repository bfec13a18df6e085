import { join } from 'node:path';
import { badRequest } from '../domain/errors.js';
import { SqliteStore } from './sqlite/sqlite-store.js';
import type { ClusterStore } from './types.js';

/** StoreUrl is a parsed `--store` value. */
export type StoreUrl = { kind: 'sqlite'; path: string } | { kind: 'etcd'; hosts: string[]; prefix: string };

/**
 * parseStoreUrl reads `sqlite:<path>` or `etcd://host:port[,host:port...][/prefix]`.
 * A missing value means the node's own `<dataDir>/cluster.db`.
 */
export function parseStoreUrl(value: string | undefined, dataDir: string): StoreUrl {
  if (!value) return { kind: 'sqlite', path: join(dataDir, 'cluster.db') };
  if (value.startsWith('sqlite:')) {
    const path = value.slice('sqlite:'.length).replace(/^\/\/(?=\/)/, '');
    if (!path) throw badRequest('store url sqlite: needs a path, e.g. sqlite:./data/cluster.db');
    return { kind: 'sqlite', path };
  }
  if (value.startsWith('etcd://')) {
    const rest = value.slice('etcd://'.length);
    const slash = rest.indexOf('/');
    const hostPart = slash === -1 ? rest : rest.slice(0, slash);
    const prefix = slash === -1 ? '/git-replication/' : `/${rest.slice(slash + 1).replace(/^\/+|\/+$/g, '')}/`;
    const hosts = hostPart
      .split(',')
      .map((h) => h.trim())
      .filter(Boolean);
    if (hosts.length === 0 || hosts.some((h) => !/^[A-Za-z0-9.[\]:-]+:\d+$/.test(h))) {
      throw badRequest(`store url '${value}' must be etcd://host:port[,host:port...]`);
    }
    return { kind: 'etcd', hosts: hosts.map((h) => `http://${h}`), prefix };
  }
  throw badRequest(`unknown store url '${value}': use sqlite:<path> or etcd://host:port`);
}

/**
 * LAYOUT_VERSION is the version of what the cluster keeps in the store (keys and their values,
 * on any backend), recorded under meta `schema_version` by the first node. A node of an older
 * build refuses to start on a store a newer one laid out; a newer build migrates (none needed
 * yet beyond SQLite's own, see SqliteStore's MIGRATIONS).
 */
export const LAYOUT_VERSION = 1;

/** checkLayout records the store's layout version, or refuses a store newer than this build. */
export async function checkLayout(store: ClusterStore): Promise<void> {
  const stored = Number(await store.setMetaIfAbsent('schema_version', String(LAYOUT_VERSION)));
  if (!(stored <= LAYOUT_VERSION))
    throw new Error(
      `the coordination store has layout version ${stored}, newer than this build's ${LAYOUT_VERSION}: run a newer git-replication`,
    );
}

/** openStore connects to the store a StoreUrl names. */
export async function openStore(url: StoreUrl): Promise<ClusterStore> {
  if (url.kind === 'sqlite') return new SqliteStore(url.path);
  const { EtcdStore } = await import('./etcd/etcd-store.js');
  const store = new EtcdStore({ hosts: url.hosts, prefix: url.prefix });
  return store;
}
