import Database from 'better-sqlite3';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

/** LOCK_FILE is the file in a data directory whose lock a running node holds. */
export const LOCK_FILE = 'node.lock';
/** PID_FILE names the process holding the lock, for the message a second one prints. */
export const PID_FILE = 'node.pid';

/** DataDirInUseError: another live process runs a node on this data directory. */
export class DataDirInUseError extends Error {
  readonly code = 'ERR_DATA_DIR_IN_USE';

  constructor(dir: string, holder: string | null) {
    super(
      `data directory ${dir} is in use by another node process${holder ? ` (pid ${holder}, per ${PID_FILE})` : ''}: ` +
        'stop it first, or give this node a data directory of its own',
    );
    this.name = 'DataDirInUseError';
  }
}

/**
 * DataDirLock keeps a second node process off a data directory in use. Starting on it, a node
 * reaps the git processes of an earlier incarnation and replaces its spawn socket: done while
 * the earlier one still ran (a restart before the old process ended, two `up`s on one
 * directory), that killed every push of the running node (500s) and cut its git spawns. The
 * lock is the kernel's (an exclusive SQLite transaction held open on `node.lock`, an fcntl
 * lock): it goes with the process however that ends, kill -9 included, and a pid reused later
 * cannot hold it.
 */
export class DataDirLock {
  private constructor(private db: Database.Database | null) {}

  /** take locks `dir` for this process; DataDirInUseError when another process holds it. */
  static take(dir: string): DataDirLock {
    const db = new Database(join(dir, LOCK_FILE), { timeout: 0 });
    try {
      db.pragma('journal_mode = MEMORY');
      db.pragma('locking_mode = EXCLUSIVE');
      db.exec('BEGIN EXCLUSIVE');
      writeFileSync(join(dir, PID_FILE), `${process.pid}\n`, { mode: 0o600 });
    } catch (err) {
      db.close();
      if ((err as { code?: string }).code === 'SQLITE_BUSY') {
        let holder: string | null = null;
        try {
          holder = readFileSync(join(dir, PID_FILE), 'utf8').trim() || null;
        } catch {
          // no pid file: the message goes without it
        }
        throw new DataDirInUseError(dir, holder);
      }
      throw err;
    }
    return new DataDirLock(db);
  }

  /** release frees the directory (a node's close); repeating it is harmless. */
  release(): void {
    this.db?.close();
    this.db = null;
  }
}
