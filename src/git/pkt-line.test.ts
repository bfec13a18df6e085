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
});
