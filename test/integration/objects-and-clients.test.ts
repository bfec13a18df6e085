import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TestCluster } from '../helpers/cluster.js';
import { commitFile, git, gitOk, refsOf, tempDir } from '../helpers/git.js';

/** literal writes an object exactly as given (git's own checks off), and returns its id. */
async function literal(dir: string, type: 'tree' | 'commit' | 'tag', body: Buffer | string): Promise<string> {
  // Through a file: tree entries hold binary ids, which a string on stdin would mangle.
  const file = join(await tempDir(), 'object');
  await writeFile(file, body);
  return (await gitOk(['hash-object', '-t', type, '-w', '--literally', file], { cwd: dir })).trim();
}

/** treeEntry is one raw tree entry: mode, name, and the binary object id. */
function treeEntry(mode: string, name: string, oid: string): Buffer {
  return Buffer.concat([Buffer.from(`${mode} ${name}\0`, 'latin1'), Buffer.from(oid, 'hex')]);
}

describe('objects git tolerates in old histories, and those it must not', () => {
  let c: TestCluster;
  let src = '';
  let blob = '';
  let goodTree = '';
  beforeAll(async () => {
    c = await TestCluster.start({ nodes: 3 });
    src = await tempDir();
    await gitOk(['init', '-q', '-b', 'main', src]);
    await commitFile(src, 'a.txt', 'a\n', 'base');
    blob = (await gitOk(['hash-object', '-w', '--stdin'], { cwd: src, input: 'hi\n' })).trim();
    goodTree = (await gitOk(['rev-parse', 'HEAD^{tree}'], { cwd: src })).trim();
  });
  afterAll(async () => {
    await c?.destroy();
  });

  /** commitWith writes a commit object with the given header lines (tree first). */
  async function commitWith(tree: string, author: string, committer = 'C <c@example.com> 1234567890 +0000'): Promise<string> {
    return literal(src, 'commit', `tree ${tree}\nauthor ${author}\ncommitter ${committer}\n\nmsg\n`);
  }

  it.each<[string, () => Promise<string>]>([
    [
      'zeroPaddedFilemode',
      async () => commitWith(await literal(src, 'tree', treeEntry('0100644', 'f', blob)), 'A <a@example.com> 1234567890 +0000'),
    ],
    ['badTimezone', async () => commitWith(goodTree, 'A <a@example.com> 1234567890 +99999')],
    ['missingSpaceBeforeDate', async () => commitWith(goodTree, 'A <a@example.com>1234567890 +0000')],
    ['badDate', async () => commitWith(goodTree, 'A <a@example.com> notadate +0000')],
    ['missingEmail', async () => commitWith(goodTree, 'A 1234567890 +0000')],
  ])('a commit with %s is accepted on every replica (as stock git daemon does)', async (kind, make) => {
    const commit = await make();
    const repo = `obj/${kind.toLowerCase()}`;
    await c.createRepo(1, repo);
    const r = await git(['push', c.repoUrl(1, repo), `${commit}:refs/heads/main`], { cwd: src });
    expect(r.code, r.stderr).toBe(0);
    const status = await c.waitInSync(repo, 2);
    expect(new Set(status.replicas.map((x) => x.checksum))).toEqual(new Set([status.checksum]));
    const back = join(await tempDir(), 'b.git');
    await gitOk(['clone', '-q', '--mirror', c.repoUrl(3, repo), back]);
    expect(await refsOf(back)).toContain(`${commit} refs/heads/main`);
  });

  it.each<[string, () => Promise<string>, RegExp]>([
    [
      'a tree with a .git entry (hasDotgit)',
      async () => commitWith(await literal(src, 'tree', treeEntry('40000', '.git', goodTree)), 'A <a@example.com> 1234567890 +0000'),
      /hasDotgit|\.git/,
    ],
    [
      'a tree with a .. entry (hasDotdot)',
      async () => commitWith(await literal(src, 'tree', treeEntry('40000', '..', goodTree)), 'A <a@example.com> 1234567890 +0000'),
      /hasDotdot|'\.\.'/,
    ],
  ])("%s is refused with git's reason, not a quorum message", async (_n, make, reason) => {
    const commit = await make();
    const repo = `obj/bad-${Math.random().toString(36).slice(2, 8)}`;
    await c.createRepo(1, repo);
    const r = await git(['push', c.repoUrl(2, repo), `${commit}:refs/heads/main`], { cwd: src });
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(reason);
    expect(r.stderr).not.toMatch(/quorum/);
    expect((await c.repoStatus(1, repo)).generation).toBe(0);
  });
});

describe('partial clone on every protocol version', () => {
  let c: TestCluster;
  let url = '';
  beforeAll(async () => {
    c = await TestCluster.start({ nodes: 3 });
    await c.createRepo(1, 'pc/repo');
    const src = await tempDir();
    await gitOk(['init', '-q', '-b', 'main', src]);
    for (let i = 0; i < 3; i++) await commitFile(src, `big${i}.txt`, `${'x'.repeat(5000)}${i}\n`, `c${i}`);
    await gitOk(['push', '-q', c.repoUrl(1, 'pc/repo'), 'main'], { cwd: src });
    url = c.repoUrl(2, 'pc/repo');
  });
  afterAll(async () => {
    await c?.destroy();
  });

  it.each(['0', '1', '2'].flatMap((v) => ['blob:none', 'blob:limit=1k', 'tree:0'].map((f) => [v, f] as const)))(
    'protocol v%s, --filter=%s: clone, check out, lazy fetch',
    async (version, filter) => {
      const dir = join(await tempDir(), 'pc');
      const r = await git(['-c', `protocol.version=${version}`, 'clone', `--filter=${filter}`, url, dir]);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stderr).not.toMatch(/unadvertised object/);
      // A lazy fetch of objects left out: the whole history's blobs.
      const log = await git(['-c', `protocol.version=${version}`, 'log', '-p', '--oneline'], { cwd: dir });
      expect(log.code, log.stderr).toBe(0);
      expect(log.stdout).toContain('+xxxxx');
    },
  );
});
