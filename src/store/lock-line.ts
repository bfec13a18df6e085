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
