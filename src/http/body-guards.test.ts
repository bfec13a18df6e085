import { PassThrough } from 'node:stream';
import { finished } from 'node:stream/promises';
import { describe, expect, it } from 'vitest';
import { chain } from './body-guards.js';

describe('chain', () => {
  it('passes an error on to the streams after it', async () => {
    const first = new PassThrough();
    const last = chain(first, new PassThrough(), new PassThrough());
    first.destroy(new Error('client went away'));
    await expect(finished(last)).rejects.toThrow('client went away');
  });

  it('passes on the error of a stream destroyed before the chain was built', async () => {
    const first = new PassThrough();
    first.on('error', () => undefined);
    first.destroy(new Error('body idle'));
    await new Promise((r) => setImmediate(r));
    const last = chain(first, new PassThrough());
    await expect(finished(last)).rejects.toThrow('body idle');
  });
});
