import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { describe, expect, it } from 'vitest';
import { encodePktLine } from './pkt-line.js';
import { ShallowWatch } from './shallow-watch.js';

const S1 = '1'.repeat(40);
const S2 = '2'.repeat(40);

/** run passes `chunks` through a watch and records, in order, each shallow line seen and each chunk passed on. */
async function run(chunks: Buffer[], onShallow?: (oid: string | null) => void): Promise<{ events: string[]; out: Buffer }> {
  const events: string[] = [];
  const passed: Buffer[] = [];
  const watch = new ShallowWatch((oid) => {
    events.push(`shallow ${oid}`);
    onShallow?.(oid);
  });
  await pipeline(
    Readable.from(chunks),
    watch,
    new Writable({
      write(chunk: Buffer, _enc, cb) {
        passed.push(chunk);
        events.push(`passed ${Buffer.concat(passed).length}`);
        cb();
      },
    }),
  );
  return { events, out: Buffer.concat(passed) };
}

describe('ShallowWatch', () => {
  const body = Buffer.concat([
    encodePktLine(`shallow ${S1}\n`),
    encodePktLine(`shallow ${S2}\n`),
    encodePktLine(`${'0'.repeat(40)} ${'3'.repeat(40)} refs/heads/main\0report-status\n`),
    Buffer.from('0000'),
    // A pack whose bytes happen to spell a shallow line is not read as one.
    Buffer.from(`PACK${encodePktLine(`shallow ${'4'.repeat(40)}\n`).toString('latin1')}`),
  ]);

  it('names each shallow line before any byte that completes it goes on, whatever the chunks; the rest passes unchanged', async () => {
    for (const size of [1, 3, 7, 50, body.length]) {
      const chunks: Buffer[] = [];
      for (let i = 0; i < body.length; i += size) chunks.push(body.subarray(i, i + size));
      const { events, out } = await run(chunks);
      expect(out).toEqual(body);
      expect(events.filter((e) => e.startsWith('shallow'))).toEqual([`shallow ${S1}`, `shallow ${S2}`]);
      // Up to the end of each line, no more bytes went on before the line was named.
      const line = encodePktLine(`shallow ${S1}\n`).length;
      const ends = [line, 2 * line];
      for (const [k, end] of ends.entries()) {
        const named = events.indexOf(`shallow ${[S1, S2][k]}`);
        const passedBefore = events
          .slice(0, named)
          .filter((e) => e.startsWith('passed'))
          .map((e) => Number(e.split(' ')[1]));
        expect(Math.max(0, ...passedBefore), `chunks of ${size}`).toBeLessThan(end);
      }
    }
  });

  it('a push without shallow lines names none; input that is not pkt-lines names null once', async () => {
    const plain = Buffer.concat([encodePktLine(`${'0'.repeat(40)} ${'3'.repeat(40)} refs/heads/main\0\n`), Buffer.from('0000PACK')]);
    expect((await run([plain])).events.filter((e) => e.startsWith('shallow'))).toEqual([]);
    const bad = await run([Buffer.from('zzzz not a pkt-line'), Buffer.from(`more ${encodePktLine(`shallow ${S1}\n`).toString('latin1')}`)]);
    expect(bad.events.filter((e) => e.startsWith('shallow'))).toEqual(['shallow null']);
    expect(bad.out.toString('latin1')).toMatch(/^zzzz not a pkt-line/);
  });

  it('a note that throws fails the stream before the line goes on', async () => {
    const passed: Buffer[] = [];
    await expect(
      pipeline(
        Readable.from([body]),
        new ShallowWatch(() => {
          throw new Error('disk gone');
        }),
        new Writable({
          write(chunk: Buffer, _enc, cb) {
            passed.push(chunk);
            cb();
          },
        }),
      ),
    ).rejects.toThrow('disk gone');
    expect(passed).toEqual([]);
  });
});
