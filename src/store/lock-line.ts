import type { LockLine } from './types.js';

/** LineEntry is one holder waiting in a repo's lock line (LockLine), as a store keeps it. */
export interface LineEntry {
  readonly holder: string;
  /** since is when the holder entered the line (kept when its entry is renewed): the line's order. */
  readonly since: number;
  /** until is when the entry lapses unless renewed. */
  readonly until: number;
}

/**
 * lineEntryOf reads a stored entry (`{since, until}` as JSON). One that does not read counts as
 * lapsed, so that it is deleted the next time the lock is taken instead of barring the lock.
 */
export function lineEntryOf(holder: string, stored: string): LineEntry {
  try {
    const v = JSON.parse(stored) as { since?: unknown; until?: unknown };
    if (typeof v.since === 'number' && typeof v.until === 'number') return { holder, since: v.since, until: v.until };
  } catch {
    // lapsed, below
  }
  return { holder, since: 0, until: 0 };
}

/** lineEntryValue is how a store keeps an entry (lineEntryOf reads it back). */
export function lineEntryValue(entry: LineEntry): string {
  return JSON.stringify({ since: entry.since, until: entry.until });
}

/** PlaceInLine is where a holder stands in a repo's lock line at one moment. */
export interface PlaceInLine {
  /** ahead is how many other holders' live entries come before this holder's (all of them, without one). */
  readonly ahead: number;
  /** mine is the holder's own live entry, if it has one. */
  readonly mine: LineEntry | null;
  /** lapsed are the entries past their `until`, which the store may delete. */
  readonly lapsed: readonly LineEntry[];
}

/** placeInLine reads a holder's place from a repo's line entries (in any order). Ties of `since` go by holder id. */
export function placeInLine(entries: readonly LineEntry[], holder: string, now: number): PlaceInLine {
  const live = entries.filter((e) => e.until > now);
  const mine = live.find((e) => e.holder === holder) ?? null;
  const before = (e: LineEntry): boolean => mine === null || e.since < mine.since || (e.since === mine.since && e.holder < holder);
  return {
    ahead: live.filter((e) => e.holder !== holder && before(e)).length,
    mine,
    lapsed: entries.filter((e) => e.until <= now),
  };
}

/**
 * lineEntryToWrite is the entry a refused waiter writes (entering the line, or renewing its entry
 * once half its time has gone), or null when the one it has will do.
 */
export function lineEntryToWrite(place: PlaceInLine, holder: string, ttlMs: number, now: number): LineEntry | null {
  if (place.mine && place.mine.until - now > ttlMs / 2) return null;
  return { holder, since: place.mine?.since ?? now, until: now + ttlMs };
}

/**
 * LineVerdict is a store's answer to one attempt at a repo's lock: take it, deleting the entries
 * in `drop` (the taker's own and the lapsed) in the same write; or not, writing `write` (the
 * refused waiter's entry, entered or renewed) unless it is null.
 */
export type LineVerdict =
  { readonly take: true; readonly drop: readonly LineEntry[] } | { readonly take: false; readonly write: LineEntry | null };

/**
 * lineVerdict decides an attempt at a lock (`held`: a live lock stands) from the repo's line
 * entries, as both stores do: a free lock goes to a holder with no one before it in the line. A
 * refused caller with a line learns how many stand before it (`line.ahead`).
 */
export function lineVerdict(
  entries: readonly LineEntry[],
  holder: string,
  held: boolean,
  line: LockLine | undefined,
  now: number,
): LineVerdict {
  const place = placeInLine(entries, holder, now);
  if (!held && place.ahead === 0) return { take: true, drop: [...place.lapsed, ...(place.mine ? [place.mine] : [])] };
  if (!line) return { take: false, write: null };
  line.ahead = place.ahead;
  return { take: false, write: lineEntryToWrite(place, holder, line.ttlMs, now) };
}
