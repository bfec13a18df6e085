import { describe, expect, it } from 'vitest';
import { DiskSpace } from './disk.js';

describe('DiskSpace', () => {
  it('reports a shortage below the minimum, with both figures', async () => {
    let free = 50 * 1024 * 1024;
    const d = new DiskSpace('/x', 100 * 1024 * 1024, () => Promise.resolve(free));
    await d.refresh();
    expect(d.shortage()).toBe('disk full: 50 MiB free under the data dir, 100 MiB required');
    free = 200 * 1024 * 1024;
    await d.refresh();
    expect(d.shortage()).toBeNull();
  });
  it('keeps the last reading when a read fails', async () => {
    let fail = false;
    const d = new DiskSpace('/x', 10, () => (fail ? Promise.reject(new Error('EIO')) : Promise.resolve(5)));
    await d.refresh();
    fail = true;
    await d.refresh();
    expect(d.freeBytes).toBe(5);
  });
  it('reads the real file system', async () => {
    const d = new DiskSpace('/tmp', 1);
    await d.refresh();
    expect(d.freeBytes).toBeGreaterThan(0);
  });
});
