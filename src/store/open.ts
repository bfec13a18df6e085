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
    const hosts = hostPart.split(',').map((h) => h.trim()).filter(Boolean);
    if (hosts.length === 0 || hosts.some((h) => !/^[A-Za-z0-9.[\]:-]+:\d+$/.test(h))) {
      throw badRequest(`store url '${value}' must be etcd://host:port[,host:port...]`);
    }
    return { kind: 'etcd', hosts: hosts.map((h) => `http://${h}`), prefix };
  }
  throw badRequest(`unknown store url '${value}': use sqlite:<path> or etcd://host:port`);
}

/** openStore connects to the store a StoreUrl names. */
export async function openStore(url: StoreUrl): Promise<ClusterStore> {
  if (url.kind === 'sqlite') return new SqliteStore(url.path);
  const { EtcdStore } = await import('./etcd/etcd-store.js');
  const store = new EtcdStore({ hosts: url.hosts, prefix: url.prefix });
  return store;
}
