import { describe, expect, it } from 'vitest';
import { WRITE_RATE_USERS_KEPT, WriteRate } from './write-rate.js';

describe('WriteRate', () => {
  it("lets a minute's writes through at once, then one each 60/perMinute seconds, naming the wait", () => {
    let now = 1_000_000;
    const rate = new WriteRate(6, () => now);
    for (let i = 0; i < 6; i++) expect(rate.take('alice')).toBeNull();
    const refused = rate.take('alice');
    expect(refused?.statusCode).toBe(429);
    expect(refused?.message).toBe('user alice made more than 6 API writes a minute through this node: try again in 10 s');
    expect(refused?.data.retryAfter).toBe(10);
    // Another user has a bucket of their own.
    expect(rate.take('bob')).toBeNull();
    now += 9_000;
    expect(rate.take('alice')).not.toBeNull();
    now += 1_000;
    expect(rate.take('alice')).toBeNull();
    expect(rate.take('alice')).not.toBeNull();
    // A quiet minute fills the bucket again, no further.
    now += 120_000;
    for (let i = 0; i < 6; i++) expect(rate.take('alice')).toBeNull();
    expect(rate.take('alice')).not.toBeNull();
  });

  it('0 is no limit', () => {
    const rate = new WriteRate(0);
    for (let i = 0; i < 10_000; i++) expect(rate.take('alice')).toBeNull();
  });

  it('keeps at most WRITE_RATE_USERS_KEPT users, dropping the refilled first', () => {
    let now = 0;
    const rate = new WriteRate(2, () => now);
    for (let i = 0; i < 2; i++) rate.take('busy');
    now = 1;
    for (let i = 0; i < WRITE_RATE_USERS_KEPT + 10; i++) rate.take(`u${i}`);
    const size = (rate as unknown as { buckets: Map<string, unknown> }).buckets.size;
    expect(size).toBeLessThanOrEqual(WRITE_RATE_USERS_KEPT);
  });
});
