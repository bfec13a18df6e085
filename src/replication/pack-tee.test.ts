import { Readable } from 'node:stream';
import { text } from 'node:stream/consumers';
import { pipeline } from 'node:stream/promises';
import { describe, expect, it } from 'vitest';
import { encodePktLine, FLUSH } from '../git/pkt-line.js';
import { MAX_COPY_TIPS } from '../cluster/protocol.js';
import { PackTap, PackTee } from './pack-tee.js';

const OLD = '0'.repeat(40);
const NEW = '1'.repeat(40);

/** command is a push's first command pkt-line with its capabilities. */
function command(caps: string): Buffer {
  return encodePktLine(`${OLD} ${NEW} refs/heads/main\0${caps}\n`);
}

/** recording is a PackTee whose peers read what they are sent into `got` (`stall`: one never reads). */
function recording(peers: string[], opts: { stall?: string; maxBuffered?: number; maxBytes?: number } = {}) {
  const got = new Map<string, Promise<string>>();
  const tee = new PackTee(
    peers,
    async (node, pack) => {
      if (node === opts.stall) {
        await new Promise<void>((resolve) => pack.once('close', () => resolve()));
        return null;
      }
      const read = text(pack);
      got.set(node, read);
      return `hash-of:${await read}`;
    },
    opts,
  );
  return { tee, got };
}

/** run sends `parts` through a PackTap into a sink and returns what came out the other side. */
async function run(tee: PackTee, parts: Buffer[]): Promise<string> {
  const out: Buffer[] = [];
  await pipeline(Readable.from(parts), new PackTap(tee), async (source: AsyncIterable<Buffer>) => {
    for await (const c of source) out.push(c);
  });
  return Buffer.concat(out).toString('latin1');
}

describe('PackTap and PackTee', () => {
  it('pass the body through unchanged and give each peer the bytes after the commands', async () => {
    const { tee } = recording(['node-2', 'node-3']);
    const body = [command('report-status-v2 side-band-64k'), FLUSH, Buffer.from('PACK'), Buffer.from('-rest')];
    expect(await run(tee, body)).toBe(Buffer.concat(body).toString('latin1'));
    expect(await tee.results.get('node-2')).toBe('hash-of:PACK-rest');
    expect(await tee.results.get('node-3')).toBe('hash-of:PACK-rest');
  });

  it("hand the peers the commands' new objects (not a delete's, not a shallow line's), and none past MAX_COPY_TIPS", async () => {
    const seen: (readonly string[] | null)[] = [];
    const tee = new PackTee(['node-2'], async (_node, pack, tips) => {
      seen.push(tips);
      await text(pack);
      return 'h';
    });
    const other = '2'.repeat(40);
    await run(tee, [
      encodePktLine(`shallow ${'3'.repeat(40)}\n`),
      command('report-status'),
      encodePktLine(`${NEW} ${OLD} refs/heads/gone\n`),
      encodePktLine(`${OLD} ${other} refs/heads/b\n`),
      FLUSH,
      Buffer.from('PACK'),
    ]);
    await tee.results.get('node-2');
    expect(seen).toEqual([[NEW, other]]);

    const many = new PackTee(['node-2'], async (_node, pack, tips) => {
      seen.push(tips);
      await text(pack);
      return 'h';
    });
    const lines = Array.from({ length: MAX_COPY_TIPS + 1 }, (_, i) =>
      encodePktLine(`${OLD} ${(i + 1).toString(16).padStart(40, '0')} refs/heads/b${i}\n`),
    );
    await run(many, [command('report-status'), ...lines, FLUSH, Buffer.from('PACK')]);
    await many.results.get('node-2');
    expect(seen[1]).toBeNull();
  });

  it('find the pack in the same chunk as the commands, and after the push options when the client sends them', async () => {
    const plain = recording(['node-2']);
    await run(plain.tee, [Buffer.concat([command('report-status'), FLUSH, Buffer.from('PACKxyz')])]);
    expect(await plain.tee.results.get('node-2')).toBe('hash-of:PACKxyz');

    const withOptions = recording(['node-2']);
    await run(withOptions.tee, [
      Buffer.concat([command('report-status push-options'), FLUSH, encodePktLine('ci.skip\n')]),
      Buffer.concat([FLUSH, Buffer.from('PACKabc')]),
    ]);
    expect(await withOptions.tee.results.get('node-2')).toBe('hash-of:PACKabc');

    // From a shallow clone the client names its shallow commits first; the capabilities come with the first command.
    const shallow = recording(['node-2']);
    await run(shallow.tee, [
      encodePktLine(`shallow ${'2'.repeat(40)}\n`),
      command('report-status push-options'),
      FLUSH,
      encodePktLine('ci.skip\n'),
      FLUSH,
      Buffer.from('PACKdef'),
    ]);
    expect(await shallow.tee.results.get('node-2')).toBe('hash-of:PACKdef');
  });

  it('make no copies of a push without a pack (deletes only)', async () => {
    const { tee } = recording(['node-2']);
    await run(tee, [command('report-status'), FLUSH]);
    expect(tee.results.size).toBe(0);
  });

  it('drop a peer that falls behind, without holding up the body or the others', async () => {
    const { tee } = recording(['node-2', 'node-3'], { stall: 'node-3', maxBuffered: 64 * 1024 });
    const chunks = Array.from({ length: 8 }, (_, i) => Buffer.alloc(32 * 1024, 97 + i));
    const out = await run(tee, [command('report-status'), FLUSH, ...chunks]);
    expect(out.length).toBe(command('report-status').length + FLUSH.length + 8 * 32 * 1024);
    expect(await tee.results.get('node-3')).toBeNull();
    expect((await tee.results.get('node-2'))?.length).toBe('hash-of:'.length + 8 * 32 * 1024);
  });

  it('abort the copies when the body fails, so that no peer takes a cut pack for whole', async () => {
    const { tee } = recording(['node-2']);
    const tap = new PackTap(tee);
    tap.on('error', () => undefined);
    tap.write(Buffer.concat([command('report-status'), FLUSH, Buffer.from('PACK-half')]));
    tap.destroy(new Error('client went away'));
    await expect(tee.results.get('node-2')).resolves.toBeNull();
  });

  it('abort every copy of a pack larger than the push size limit', async () => {
    const { tee } = recording(['node-2', 'node-3'], { maxBytes: 100 });
    const out = await run(tee, [command('report-status'), FLUSH, Buffer.alloc(60, 1), Buffer.alloc(60, 2)]);
    expect(out.length).toBe(command('report-status').length + FLUSH.length + 120);
    expect(await tee.results.get('node-2')).toBeNull();
    expect(await tee.results.get('node-3')).toBeNull();
  });
});
