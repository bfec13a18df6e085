import { closeSync, fstatSync, openSync, readSync } from 'node:fs';

/** IDX_V2 is the start of a version 2 pack index (gitformat-pack(5)): `\377tOc`, then version 2. */
const IDX_V2 = Buffer.from([0xff, 0x74, 0x4f, 0x63, 0, 0, 0, 2]);
/** FANOUT_AT is where the fan-out table starts: 256 counts of the names whose first byte is at most i. */
const FANOUT_AT = IDX_V2.length;
/** NAMES_AT is where the sorted object names start. */
const NAMES_AT = FANOUT_AT + 256 * 4;

/**
 * packIndexHolds says whether every object of `oids` (hex names, all of one length) is in the
 * pack whose version 2 index (`index-pack` writes no other) is at `idxPath`. It reads the
 * fan-out table once, then, for each object, binary-searches the names that share its first
 * byte with one small read per step, so a big pack costs a few reads per object, not its whole
 * index. False when the index cannot be read, is not version 2, is shorter than its fan-out
 * table says, or lacks an object; it never throws.
 */
export function packIndexHolds(idxPath: string, oids: readonly string[]): boolean {
  if (oids.length === 0) return true;
  const hexLength = oids[0]!.length;
  if ((hexLength !== 40 && hexLength !== 64) || !oids.every((o) => o.length === hexLength && /^[0-9a-f]+$/.test(o))) return false;
  const size = hexLength / 2;
  let fd: number;
  try {
    fd = openSync(idxPath, 'r');
  } catch {
    return false;
  }
  try {
    const head = Buffer.alloc(NAMES_AT);
    if (readSync(fd, head, 0, NAMES_AT, 0) !== NAMES_AT || !head.subarray(0, FANOUT_AT).equals(IDX_V2)) return false;
    const below = (byte: number): number => (byte === 0 ? 0 : head.readUInt32BE(FANOUT_AT + (byte - 1) * 4));
    const count = head.readUInt32BE(FANOUT_AT + 255 * 4);
    // Names, CRCs and offsets, then the two trailing hashes: an index cut short is not trusted.
    if (fstatSync(fd).size < NAMES_AT + count * (size + 8) + 2 * size) return false;
    const name = Buffer.alloc(size);
    return oids.every((oid) => {
      const want = Buffer.from(oid, 'hex');
      let lo = below(want[0]!);
      let hi = head.readUInt32BE(FANOUT_AT + want[0]! * 4);
      if (hi > count || lo > hi) return false;
      while (lo < hi) {
        const mid = (lo + hi) >>> 1;
        if (readSync(fd, name, 0, size, NAMES_AT + mid * size) !== size) return false;
        const cmp = name.compare(want);
        if (cmp === 0) return true;
        if (cmp < 0) lo = mid + 1;
        else hi = mid;
      }
      return false;
    });
  } catch {
    return false;
  } finally {
    closeSync(fd);
  }
}
