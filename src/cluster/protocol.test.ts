import { describe, expect, it } from 'vitest';
import {
  common,
  formatRange,
  MAX_COPY_TIPS,
  parsePrepare,
  parseStageUpload,
  prepareToWire,
  protocolFromEnv,
  stageUploadToWire,
  type PrepareRequest,
} from './protocol.js';

describe('protocol versions', () => {
  it.each<[string, { min: number; max: number }, { min: number; max: number } | undefined, number | null]>([
    ['same', { min: 2, max: 2 }, { min: 2, max: 2 }, 2],
    ['old and upgraded', { min: 2, max: 2 }, { min: 2, max: 3 }, 2],
    ['both upgraded', { min: 2, max: 3 }, { min: 2, max: 3 }, 3],
    ['new only against old only', { min: 3, max: 3 }, { min: 2, max: 2 }, null],
    ['a peer that registered none speaks 1', { min: 2, max: 2 }, undefined, null],
    ['a range that still speaks 1', { min: 1, max: 2 }, undefined, 1],
  ])('%s', (_n, a, b, v) => {
    expect(common(a, b)).toBe(v);
  });
  it('reads the test hook', () => {
    expect(protocolFromEnv(undefined)).toEqual({ min: 2, max: 5 });
    expect(protocolFromEnv('2-3')).toEqual({ min: 2, max: 3 });
    expect(protocolFromEnv('3')).toEqual({ min: 3, max: 3 });
    expect(() => protocolFromEnv('3-2')).toThrow();
    expect(() => protocolFromEnv('x')).toThrow();
    expect(formatRange({ min: 2, max: 3 })).toBe('2-3');
    expect(formatRange(undefined)).toBe('1');
  });
});

describe('prepare messages', () => {
  const req: PrepareRequest = {
    txnId: 't1',
    repoId: 'acme/site',
    kind: 'push',
    coordinator: 'node-1',
    incarnation: 'inc',
    baseGeneration: 4,
    fencingToken: 7,
    newChecksum: 'c'.repeat(64),
    updates: [{ ref: 'refs/heads/main', oldOid: '0'.repeat(40), newOid: 'a'.repeat(40) }],
  };
  it('carry replicaChecked only when set, and read it back', () => {
    expect(prepareToWire(req)).not.toHaveProperty('replica_checked');
    expect(parsePrepare(prepareToWire(req))).toEqual(req);
    expect(parsePrepare(prepareToWire({ ...req, replicaChecked: true }))).toEqual({ ...req, replicaChecked: true });
  });
  it('refuse a replica_checked that is not a boolean', () => {
    expect(() => parsePrepare({ ...prepareToWire(req), replica_checked: 'yes' })).toThrow(/replica_checked must be a boolean/);
  });
});

describe('upload stage messages', () => {
  it("carry the push's new tips, checked as object ids and bounded", () => {
    const tip = 'a'.repeat(40);
    expect(parseStageUpload(stageUploadToWire({ repoId: 'o/r', tips: [tip] }))).toEqual({ repoId: 'o/r', tips: [tip] });
    expect(parseStageUpload(stageUploadToWire({ repoId: 'o/r' }))).toEqual({ repoId: 'o/r' });
    for (const tips of ['x', ['HEAD'], [tip, 7], Array.from({ length: MAX_COPY_TIPS + 1 }, () => tip)])
      expect(() => parseStageUpload({ repo_id: 'o/r', tips })).toThrow(/tips must be a list/);
  });
});
