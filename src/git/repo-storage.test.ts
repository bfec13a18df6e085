import { execFileSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  fsyncRefDirs,
  LFS_COMPLETE,
  LINKS_CHECKED,
  LINKS_UNCHECKED,
  linksState,
  noteShallow,
  objectPresent,
  refDirsToSync,
  ReplicaStorage,
  syncRefs,
} from './repo-storage.js';
import { GitRunner } from './runner.js';
import { BULK_REF_UPDATES } from './update-ref.js';

const ENV = {
  ...process.env,
  GIT_CONFIG_NOSYSTEM: '1',
  GIT_CONFIG_GLOBAL: '/dev/null',
  GIT_AUTHOR_NAME: 't',
  GIT_AUTHOR_EMAIL: 't@x',
  GIT_COMMITTER_NAME: 't',
  GIT_COMMITTER_EMAIL: 't@x',
};

/** sh runs the real git with the test's clean environment and gives its output, trimmed. */
function sh(cwd: string, ...args: string[]): string {
  return execFileSync('git', args, { cwd, env: ENV, encoding: 'utf8' }).trim();
}

describe('fsyncRefDirs', () => {
  let root = '';

  beforeAll(() => {
    root = mkdtempSync(join(tmpdir(), 'fsync-refs-'));
  });
  afterAll(() => rmSync(root, { recursive: true, force: true }));

  it('syncs the directories of committed refs, and the nearest parent of one a delete emptied', async () => {
    const repo = join(root, 'r.git');
    sh(root, 'init', '-q', '--bare', repo);
    const work = join(root, 'w');
    sh(root, 'init', '-q', work);
    sh(work, 'commit', '-q', '--allow-empty', '-m', 'a');
    sh(work, 'push', '-q', repo, 'HEAD:refs/heads/feature/deep/x', 'HEAD:refs/heads/main');
    // git removes the directories a delete leaves empty: refs/heads/feature/deep and refs/heads/feature go.
    sh(repo, 'update-ref', '-d', 'refs/heads/feature/deep/x');
    expect(existsSync(join(repo, 'refs/heads/feature'))).toBe(false);
    await expect(fsyncRefDirs(repo, ['refs/heads/feature/deep/x', 'refs/heads/main'])).resolves.toBeUndefined();
  });

  it('syncs every directory from each ref up to the repo: git may have created or removed any of them', () => {
    const repo = join(root, 'dirs.git');
    expect(refDirsToSync(repo, ['refs/heads/feature/deep/x', 'refs/heads/main', 'refs/tags/v1']).sort()).toEqual(
      [
        repo,
        `${repo}/refs`,
        `${repo}/refs/heads`,
        `${repo}/refs/heads/feature`,
        `${repo}/refs/heads/feature/deep`,
        `${repo}/refs/tags`,
      ].sort(),
    );
    expect(refDirsToSync(repo, ['HEAD'])).toEqual([repo]);
    // A path that would leave the repo (ref names are checked before this) adds nothing outside it.
    expect(refDirsToSync(repo, ['../other.git/refs/heads/x'])).toEqual([repo]);
  });

  it('fails, naming the directory, when the repository itself is gone', async () => {
    await expect(fsyncRefDirs(join(root, 'missing.git'), ['refs/heads/main'])).rejects.toThrow(/fsync of .*missing\.git.* failed/);
  });
});

describe('syncRefs', () => {
  let root = '';
  let repo = '';
  const savedPath = process.env.PATH;

  /** withSync puts a `sync` first on PATH that logs its arguments, then runs `tail` (the real one, or a failure). */
  function withSync(tail: string): string {
    const bin = join(root, `bin-${Math.random().toString(36).slice(2)}`);
    mkdirSync(bin);
    const log = join(bin, 'calls');
    writeFileSync(join(bin, 'sync'), `#!/bin/sh\necho "$@" >> '${log}'\n${tail}\n`);
    chmodSync(join(bin, 'sync'), 0o755);
    process.env.PATH = `${bin}:${savedPath ?? ''}`;
    return log;
  }

  beforeAll(() => {
    root = mkdtempSync(join(tmpdir(), 'sync-refs-'));
    repo = join(root, 'r.git');
    sh(root, 'init', '-q', '--bare', repo);
  });
  afterEach(() => {
    process.env.PATH = savedPath;
  });
  afterAll(() => rmSync(root, { recursive: true, force: true }));

  const refs = (n: number): string[] => Array.from({ length: n }, (_, i) => `refs/heads/r${i}`);

  it('syncs the whole file system once for a bulk transaction, the directories below that size', async () => {
    const log = withSync('exec /bin/sync "$@"');
    await syncRefs(repo, refs(BULK_REF_UPDATES - 1));
    expect(existsSync(log)).toBe(false);
    await syncRefs(repo, refs(BULK_REF_UPDATES));
    expect(readFileSync(log, 'utf8')).toBe(`-f ${repo}\n`);
  });

  it('fsyncs file by file when sync cannot, and still fails for a repository that is gone', async () => {
    const log = withSync('exit 1');
    await expect(syncRefs(repo, refs(BULK_REF_UPDATES))).resolves.toBeUndefined();
    expect(readFileSync(log, 'utf8')).toBe(`-f ${repo}\n`);
    await expect(syncRefs(join(root, 'missing.git'), refs(BULK_REF_UPDATES))).rejects.toThrow(/fsync of .*missing\.git.* failed/);
  });
});

describe('initRepo', () => {
  let root = '';

  beforeAll(() => {
    root = mkdtempSync(join(tmpdir(), 'init-repo-'));
  });
  afterAll(() => rmSync(root, { recursive: true, force: true }));

  it("makes a replica without git's template (sample hooks, description): what git needs and the replica config only", async () => {
    const storage = new ReplicaStorage(root, new GitRunner({ owner: root, instance: randomUUID(), maxProcesses: 2 }));
    const made = join(root, 'made.git');
    await storage.initRepo(made, randomUUID());
    expect(existsSync(join(made, 'hooks'))).toBe(false);
    expect(existsSync(join(made, 'description'))).toBe(false);
    const names = readdirSync(made, { recursive: true }).map(String).sort();
    expect(names).toEqual([
      'HEAD',
      'config',
      LFS_COMPLETE,
      LINKS_CHECKED,
      'objects',
      'objects/info',
      'objects/pack',
      'refs',
      'refs/heads',
      'refs/tags',
    ]);
    expect(sh(made, 'rev-parse', '--is-bare-repository')).toBe('true');
  });
});

describe('the links-checked mark (LINKS_CHECKED)', () => {
  let root = '';

  beforeAll(() => {
    root = mkdtempSync(join(tmpdir(), 'links-checked-'));
  });
  afterAll(() => rmSync(root, { recursive: true, force: true }));

  it('a new replica and an adopted clone have it', async () => {
    const storage = new ReplicaStorage(root, new GitRunner({ owner: root, instance: randomUUID(), maxProcesses: 2 }));
    const made = join(root, 'made.git');
    await storage.initRepo(made, randomUUID());
    expect(linksState(made) === 'checked').toBe(true);
    const clone = join(root, 'clone.git');
    sh(root, 'clone', '-q', '--mirror', made, clone);
    expect(linksState(clone) === 'checked').toBe(false);
    await storage.adoptClone(clone, randomUUID());
    expect(linksState(clone) === 'checked').toBe(true);
  });

  it('objectPresent finds objects loose and packed, and nothing else', () => {
    const work = join(root, 'work');
    sh(root, 'init', '-q', '-b', 'main', work);
    writeFileSync(join(work, 'a.txt'), 'a\n');
    sh(work, 'add', 'a.txt');
    sh(work, 'commit', '-q', '-m', 'a');
    const loose = sh(work, 'rev-parse', 'HEAD');
    expect(objectPresent(join(work, '.git'), loose)).toBe(true);
    sh(work, 'repack', '-a', '-d', '-q');
    expect(existsSync(join(work, '.git', 'objects', loose.slice(0, 2), loose.slice(2)))).toBe(false);
    expect(objectPresent(join(work, '.git'), loose)).toBe(true);
    expect(objectPresent(join(work, '.git'), sh(work, 'rev-parse', 'HEAD:a.txt'))).toBe(true);
    expect(objectPresent(join(work, '.git'), 'e'.repeat(40))).toBe(false);
    expect(objectPresent(join(work, '.git'), '../../x')).toBe(false);
  });

  it('noteShallow takes it away for a shallow commit the replica lacks, or a line it could not read; not for one it has', () => {
    const repo = join(root, 'noted.git');
    sh(root, 'init', '-q', '--bare', repo);
    writeFileSync(join(repo, LINKS_CHECKED), 'x\n');
    const blob = execFileSync('git', ['hash-object', '-w', '--stdin'], { cwd: repo, env: ENV, input: 'b\n', encoding: 'utf8' }).trim();
    noteShallow(repo, blob);
    expect(linksState(repo) === 'checked').toBe(true);
    noteShallow(repo, 'd'.repeat(40));
    expect(linksState(repo) === 'checked').toBe(false);
    expect(existsSync(join(repo, LINKS_UNCHECKED))).toBe(true);
    // Gone already: nothing to do.
    noteShallow(repo, 'd'.repeat(40));
    // LINKS_UNCHECKED outranks a mark written again (the verifier's, racing).
    writeFileSync(join(repo, LINKS_CHECKED), 'x\n');
    expect(linksState(repo) === 'checked').toBe(false);
    // A replica made before the mark (neither file): a shallow commit it has leaves it so; one it lacks, or a line not read, marks it unchecked.
    const legacy = join(root, 'legacy.git');
    sh(root, 'init', '-q', '--bare', legacy);
    const have = execFileSync('git', ['hash-object', '-w', '--stdin'], { cwd: legacy, env: ENV, input: 'c\n', encoding: 'utf8' }).trim();
    noteShallow(legacy, have);
    expect(linksState(legacy) === 'unknown').toBe(true);
    noteShallow(legacy, null);
    expect([linksState(legacy) === 'unknown', linksState(legacy) === 'checked', existsSync(join(legacy, LINKS_UNCHECKED))]).toEqual([
      false,
      false,
      true,
    ]);
  });
});
