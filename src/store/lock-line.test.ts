import { describe, expect, it } from 'vitest';
import { lineEntryOf, lineEntryToWrite, lineVerdict, placeInLine } from './lock-line.js';

describe('placeInLine', () => {
  const entries = [
    { holder: 'n3', since: 20, until: 2_000 },
    { holder: 'n1', since: 10, until: 2_000 },
    { holder: 'n2', since: 10, until: 2_000 },
    { holder: 'n4', since: 5, until: 100 },
  ];

  it('counts the live entries of others that came first; ties of since go by holder id', () => {
    expect(placeInLine(entries, 'n1', 500)).toMatchObject({ ahead: 0, mine: entries[1] });
    expect(placeInLine(entries, 'n2', 500)).toMatchObject({ ahead: 1, mine: entries[2] });
    expect(placeInLine(entries, 'n3', 500)).toMatchObject({ ahead: 2, mine: entries[0] });
  });

  it('puts a holder without an entry behind every live one, and names the lapsed', () => {
    const place = placeInLine(entries, 'n9', 500);
    expect(place.ahead).toBe(3);
    expect(place.mine).toBeNull();
    expect(place.lapsed.map((e) => e.holder)).toEqual(['n4']);
    // Before n4 lapsed, it was first.
    expect(placeInLine(entries, 'n1', 50).ahead).toBe(1);
  });
});

describe('lineEntryToWrite', () => {
  it('enters a holder at now, renews an entry once half its time has gone keeping its place, else writes nothing', () => {
    expect(lineEntryToWrite(placeInLine([], 'n1', 1_000), 'n1', 2_000, 1_000)).toEqual({ holder: 'n1', since: 1_000, until: 3_000 });
    const mine = [{ holder: 'n1', since: 400, until: 2_400 }];
    expect(lineEntryToWrite(placeInLine(mine, 'n1', 1_000), 'n1', 2_000, 1_000)).toBeNull();
    expect(lineEntryToWrite(placeInLine(mine, 'n1', 1_500), 'n1', 2_000, 1_500)).toEqual({ holder: 'n1', since: 400, until: 3_500 });
  });
});

describe('lineEntryOf', () => {
  it('reads a stored entry; one that does not read has lapsed', () => {
    expect(lineEntryOf('n1', '{"since":1,"until":2}')).toEqual({ holder: 'n1', since: 1, until: 2 });
    for (const bad of ['', 'not json', '{"since":"1","until":2}', '{}', 'null', '[]'])
      expect(lineEntryOf('n1', bad), bad).toEqual({ holder: 'n1', since: 0, until: 0 });
  });
});

describe('lineVerdict', () => {
  const entries = [
    { holder: 'n2', since: 10, until: 2_000 },
    { holder: 'n1', since: 20, until: 2_000 },
    { holder: 'n4', since: 5, until: 100 },
  ];

  it('gives a free lock to the first in line, dropping its entry and the lapsed', () => {
    expect(lineVerdict(entries, 'n2', false, undefined, 500)).toEqual({ take: true, drop: [entries[2], entries[0]] });
  });

  it('refuses a holder behind another, or any while the lock is held; with a line, says the place and the entry to write', () => {
    expect(lineVerdict(entries, 'n1', false, undefined, 500)).toEqual({ take: false, write: null });
    const line: { ttlMs: number; ahead?: number } = { ttlMs: 2_000 };
    expect(lineVerdict(entries, 'n3', false, line, 500)).toEqual({ take: false, write: { holder: 'n3', since: 500, until: 2_500 } });
    expect(line.ahead).toBe(2);
    // First in line but the lock is held: refused, its entry still fresh enough to keep.
    expect(lineVerdict(entries, 'n2', true, line, 500)).toEqual({ take: false, write: null });
    expect(line.ahead).toBe(0);
  });
});
