import { describe, expect, it } from 'vitest';
import { SqliteStore } from '../store/sqlite/sqlite-store.js';
import { AUDIT_REFS_KEPT, AuditLog } from './audit.js';

describe('AuditLog', () => {
  it("names a push's first refs and counts the rest, in the store and in the log", async () => {
    const store = new SqliteStore(':memory:');
    const logged: unknown[] = [];
    const logger = { info: (o: unknown) => logged.push(o), warn: () => undefined } as unknown as ConstructorParameters<typeof AuditLog>[1];
    const audit = new AuditLog(store, logger, 'n1');
    const refs = Array.from({ length: 5_000 }, (_, i) => `refs/heads/b${i}`);
    const { value } = audit.entry({ action: 'push', user: 'u', token: 't', repo: 'o/r', refs });
    const stored = JSON.parse(value) as { refs: string[]; refsTotal: number };
    expect(stored.refs).toEqual(refs.slice(0, AUDIT_REFS_KEPT));
    expect(stored.refsTotal).toBe(5_000);
    expect(value.length).toBeLessThan(4_000);
    expect(logged[0]).toMatchObject({ refsTotal: 5_000 });
    // A few refs are named as they are, with no count.
    const small = JSON.parse(
      audit.entry({ action: 'push', user: 'u', token: 't', repo: 'o/r', refs: ['refs/heads/main'] }).value,
    ) as Record<string, unknown>;
    expect(small.refs).toEqual(['refs/heads/main']);
    expect(small.refsTotal).toBeUndefined();
    await store.close();
  });
});
