import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { describe, expect, it } from 'vitest';
import { encodePktLine, PktLineReader, PktLineValidator } from './pkt-line.js';

async function validate(chunks: Buffer[], packAfterFlush: boolean): Promise<Buffer> {
  const out: Buffer[] = [];
  await pipeline(Readable.from(chunks), new PktLineValidator({ packAfterFlush }), async (src: AsyncIterable<Buffer>) => {
    for await (const c of src) out.push(c);
  });
  return Buffer.concat(out);
}

describe('pkt-line', () => {
  it('encodes and decodes across chunk boundaries', () => {
    const wire = Buffer.concat([encodePktLine('want abc\n'), Buffer.from('0000'), Buffer.from('0001'), encodePktLine('done\n')]);
    const r = new PktLineReader();
    const pkts = [];
    for (const byte of wire) {
      r.push(Buffer.from([byte]));
      for (let p = r.read(); p; p = r.read()) pkts.push(p);
    }
    expect(pkts.map((p) => (p.type === 'data' ? p.data.toString() : p.type))).toEqual(['want abc\n', 'flush', 'delim', 'done\n']);
  });

  it.each([['zzzz'], ['0003'], ['00ffshort'], ['']])('the validator refuses %j', async (body) => {
    await expect(validate(body ? [Buffer.from(body)] : [], false)).rejects.toMatchObject({ statusCode: 400 });
  });

  it('passes upload-pack requests and receive-pack commands + pack through unchanged', async () => {
    const up = Buffer.concat([encodePktLine('want 1234\n'), Buffer.from('0000'), encodePktLine('done\n')]);
    expect(await validate([up.subarray(0, 5), up.subarray(5)], false)).toEqual(up);
    const push = Buffer.concat([
      encodePktLine('old new ref\0caps\n'),
      Buffer.from('0000'),
      Buffer.from('PACK\0\0\0\u0002 anything goes here'),
    ]);
    expect(await validate([push], true)).toEqual(push);
  });

  it("gives onFirst the first command's line with its capabilities, after any shallow lines", async () => {
    const seen: string[] = [];
    const body = Buffer.concat([
      encodePktLine(`shallow ${'2'.repeat(40)}\n`),
      encodePktLine('old new ref\0report-status quiet\n'),
      encodePktLine('old2 new2 ref2\n'),
      Buffer.from('0000'),
      Buffer.from('PACK'),
    ]);
    const v = new PktLineValidator({ packAfterFlush: true, onFirst: (d) => seen.push(d.toString('latin1')) });
    await pipeline(Readable.from([body]), v, async (src: AsyncIterable<Buffer>) => {
      for await (const c of src) void c;
    });
    expect(seen).toEqual(['old new ref\0report-status quiet\n']);
  });

  it('a push asking for push-options has its options counted as preamble, up to their flush, then the pack passes unread', async () => {
    const options = Array.from({ length: 40 }, (_, i) => encodePktLine(`opt${i}=${'x'.repeat(60)}\n`));
    const push = (caps: string): Buffer =>
      Buffer.concat([
        encodePktLine(`old new ref\0${caps}\n`),
        Buffer.from('0000'),
        ...options,
        Buffer.from('0000'),
        Buffer.from('PACKzzzz'),
      ]);
    const run = (body: Buffer): Promise<void> =>
      pipeline(
        Readable.from([body]),
        new PktLineValidator({ packAfterFlush: true, maxPreambleBytes: 1_000 }),
        async (src: AsyncIterable<Buffer>) => {
          for await (const c of src) void c;
        },
      );
    // 40 options of 70 bytes: past a 1,000-byte preamble limit once they count.
    await expect(run(push('report-status push-options'))).rejects.toMatchObject({ statusCode: 413 });
    // Without push-options, what follows the commands' flush is the pack's, not read as pkt-lines.
    await expect(run(push('report-status'))).resolves.toBeUndefined();
    // With them, a malformed pack after the options' flush still passes: it is git's to refuse.
    const small = Buffer.concat([
      encodePktLine('old new ref\0push-options\n'),
      Buffer.from('0000'),
      encodePktLine('ci.skip\n'),
      Buffer.from('0000'),
      Buffer.from('zz'),
    ]);
    expect(await validate([small.subarray(0, 7), small.subarray(7)], true)).toEqual(small);
  });
});
