import { describe, expect, it } from 'vitest';
import { HostHealth } from './host-health.js';

const A = 'http://10.0.0.1:2379';
const B = 'http://10.0.0.2:2379';
const C = 'http://10.0.0.3:2379';

describe('HostHealth', () => {
  const cases: Array<{ name: string; hosts: string[]; failed: string[]; recovered?: string[]; usable: string[] }> = [
    { name: 'every member is usable at first', hosts: [A, B, C], failed: [], usable: [A, B, C] },
    { name: 'a member that did not answer is skipped', hosts: [A, B, C], failed: [C], usable: [A, B] },
    { name: 'two silent members leave the third', hosts: [A, B, C], failed: [C, A], usable: [B] },
    { name: 'when every member is silent all are tried again', hosts: [A, B, C], failed: [A, B, C], usable: [A, B, C] },
    { name: 'a member that answers again is used again', hosts: [A, B, C], failed: [C], recovered: [C], usable: [A, B, C] },
    { name: 'the one member of a single-member store is never skipped', hosts: [A], failed: [A], usable: [A] },
    { name: 'failing twice is the same as once', hosts: [A, B], failed: [B, B], usable: [A] },
  ];
  for (const c of cases) {
    it(c.name, () => {
      const health = new HostHealth(c.hosts);
      for (const h of c.failed) health.failed(h);
      for (const h of c.recovered ?? []) health.recovered(h);
      expect(c.hosts.filter((h) => health.usable(h))).toEqual(c.usable);
    });
  }

  it('lists the suspect members for probing, and none once they recovered', () => {
    const health = new HostHealth([A, B, C]);
    health.failed(B);
    health.failed(C);
    expect(health.suspect().sort()).toEqual([B, C]);
    health.recovered(B);
    health.recovered(C);
    expect(health.suspect()).toEqual([]);
  });
});
