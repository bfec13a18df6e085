import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fsyncRefDirs } from './repo-storage.js';

const ENV = {
  ...process.env,
  GIT_CONFIG_NOSYSTEM: '1',
  GIT_CONFIG_GLOBAL: '/dev/null',
  GIT_AUTHOR_NAME: 't',
  GIT_AUTHOR_EMAIL: 't@x',
  GIT_COMMITTER_NAME: 't',
  GIT_COMMITTER_EMAIL: 't@x',
};

describe('fsyncRefDirs', () => {
  let root = '';
  const sh = (cwd: string, ...args: string[]): string => execFileSync('git', args, { cwd, env: ENV, encoding: 'utf8' }).trim();

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

  it('fails, naming the directory, when the repository itself is gone', async () => {
    await expect(fsyncRefDirs(join(root, 'missing.git'), ['refs/heads/main'])).rejects.toThrow(/fsync of .*missing\.git.* failed/);
  });
});
