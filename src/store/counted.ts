import type { ClusterStore } from './types.js';

/** StoreCallCounter is told each call made to the store, by operation (a ClusterStore method name). */
export interface StoreCallCounter {
  inc(labels: { op: string }): void;
}

/**
 * countStoreCalls wraps a store so that every method call is counted by operation before it is
 * made (`gitrep_store_operations_total{op}`): what the background passes, the write path and the
 * API cost the store, measured rather than estimated (docs/SCALE.md). A call counts once
 * whatever the backend does for it (one SQLite transaction, one etcd Txn or range read).
 */
export function countStoreCalls(store: ClusterStore, counter: StoreCallCounter): ClusterStore {
  return new Proxy(store, {
    get(target, prop, receiver) {
      const value: unknown = Reflect.get(target, prop, receiver);
      if (typeof value !== 'function' || typeof prop !== 'string' || prop === 'close') return value;
      const method = value as (...args: unknown[]) => unknown;
      return (...args: unknown[]): unknown => {
        counter.inc({ op: prop });
        return method.apply(target, args);
      };
    },
  });
}
