import { execFile } from 'node:child_process';
import fs from 'node:fs';
import { join } from 'node:path';
import isogit from 'isomorphic-git';
import isoHttp from 'isomorphic-git/http/node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TestCluster } from '../helpers/cluster.js';
import { commitFile, gitOk, lsRemote, tempDir, workRepo } from '../helpers/git.js';

/**
 * Clients other than git's own, against a cluster with token auth and a private repository:
 * clone with credentials, push, and a non-fast-forward push refused with git's reason.
 * The Python clients are Debian's (python3-dulwich, python3-pygit2); without them those cases
 * are skipped with the reason.
 */

const PYTHON = '/usr/bin/python3';

function python(script: string, env: Record<string, string>): Promise<{ code: number; out: string }> {
  return new Promise((resolve) => {
    execFile(PYTHON, ['-c', script], { env: { ...process.env, ...env }, timeout: 120_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, out: `${stdout}${stderr}` });
    });
  });
}

async function importable(module: string): Promise<string | null> {
  const r = await python(`import ${module}`, {});
  return r.code === 0 ? null : `${PYTHON} cannot import ${module} (Debian's python3-${module})`;
}

const noDulwich = await importable('dulwich');
const noPygit2 = await importable('pygit2');

describe('other git clients against a private repository with token auth', () => {
  let c: TestCluster;
  let token = '';
  let url = '';
  beforeAll(async () => {
    c = await TestCluster.start({ nodes: 3, env: { AUTH: 'tokens' } });
    token = await c.adminToken();
    c.authToken = token;
    await c.createRepo(1, 'clients/repo');
    url = c.repoUrl(2, 'clients/repo');
    const work = await workRepo();
    const push = new URL(c.repoUrl(1, 'clients/repo'));
    push.username = 'x';
    push.password = token;
    await gitOk(['push', '-q', push.toString(), 'HEAD:refs/heads/main'], { cwd: work });
    // main moves on after every client cloned: each client's next push to main is not a fast-forward.
  });
  afterAll(async () => {
    await c?.destroy();
  });

  const authed = (): string => {
    const u = new URL(url);
    u.username = 'x';
    u.password = token;
    return u.toString();
  };

  it('isomorphic-git: clone with credentials, push a branch, a non-fast-forward refused', async () => {
    const dir = await tempDir('gitrep-iso-');
    const onAuth = (): { username: string; password: string } => ({ username: 'x', password: token });
    await isogit.clone({ fs, http: isoHttp, dir, url, ref: 'main', singleBranch: true, onAuth });
    fs.writeFileSync(join(dir, 'iso.txt'), 'iso\n');
    await isogit.add({ fs, dir, filepath: 'iso.txt' });
    const oid = await isogit.commit({ fs, dir, message: 'iso', author: { name: 'Iso', email: 'iso@example.com' } });
    expect((await isogit.push({ fs, http: isoHttp, dir, url, ref: 'main', remoteRef: 'refs/heads/iso', onAuth })).ok).toBe(true);
    expect(await lsRemote(authed())).toContain(`${oid}\trefs/heads/iso`);
    // main moved on meanwhile (a push through git): the client's main is now behind.
    const other = await workRepo();
    await gitOk(['fetch', '-q', authed(), 'main'], { cwd: other });
    await gitOk(['reset', '-q', '--hard', 'FETCH_HEAD'], { cwd: other });
    await commitFile(other, 'moved.txt', 'moved\n', 'moved on');
    await gitOk(['push', '-q', authed(), 'HEAD:refs/heads/main'], { cwd: other });
    const refused = await isogit.push({ fs, http: isoHttp, dir, url, ref: 'main', remoteRef: 'refs/heads/main', onAuth }).then(
      (r) => JSON.stringify(r),
      (e: unknown) => String(e),
    );
    expect(refused).toMatch(/not a simple fast-forward|fetch first|PushRejectedError/);
  });

  /** moveMain pushes a new commit onto main through git, so a client's main falls behind. */
  async function moveMain(): Promise<void> {
    const other = await workRepo();
    await gitOk(['fetch', '-q', authed(), 'main'], { cwd: other });
    await gitOk(['reset', '-q', '--hard', 'FETCH_HEAD'], { cwd: other });
    await commitFile(other, `moved-${Date.now()}.txt`, 'moved\n', 'moved on');
    await gitOk(['push', '-q', authed(), 'HEAD:refs/heads/main'], { cwd: other });
  }

  // Each Python client runs in two steps: clone, commit and push a branch; then, once main has
  // moved on, push its own main, which is no longer a fast-forward.
  it.skipIf(noDulwich !== null)(
    `dulwich: clone, push a branch, a non-fast-forward refused${noDulwich ? ` (skipped: ${noDulwich})` : ''}`,
    async () => {
      const dir = join(await tempDir('gitrep-dulwich-'), 'd');
      const env = { URL: url, TOKEN: token, DIR: dir };
      const first = await python(
        `
import os, io
from dulwich import porcelain
url, tok, d = os.environ['URL'], os.environ['TOKEN'], os.environ['DIR']
repo = porcelain.clone(url, d, username='x', password=tok, errstream=io.BytesIO())
open(os.path.join(d, 'dul.txt'), 'w').write('dulwich\\n')
porcelain.add(repo, [os.path.join(d, 'dul.txt')])
sha = porcelain.commit(repo, message=b'dulwich', author=b'D <d@example.com>', committer=b'D <d@example.com>')
porcelain.push(repo, url, b'HEAD:refs/heads/dulwich', username='x', password=tok, errstream=io.BytesIO())
print('pushed', sha.decode())
`,
        env,
      );
      expect(first.code, first.out).toBe(0);
      const sha = /pushed ([0-9a-f]{40})/.exec(first.out)?.[1];
      expect(sha, first.out).toBeDefined();
      expect(await lsRemote(authed())).toContain(`${sha!}\trefs/heads/dulwich`);
      await moveMain();
      const second = await python(
        `
import os, io
from dulwich import porcelain
url, tok, d = os.environ['URL'], os.environ['TOKEN'], os.environ['DIR']
err = io.BytesIO()
try:
    porcelain.push(porcelain.open_repo(d), url, b'HEAD:refs/heads/main', username='x', password=tok, errstream=err)
    print('accepted', err.getvalue())
except Exception as e:
    print('refused:', type(e).__name__, e, err.getvalue())
`,
        env,
      );
      expect(second.out).toMatch(/refused:.*(fetch first|fast.forward|diverged)/i);
      expect(await lsRemote(authed())).not.toContain(`${sha!}\trefs/heads/main`);
    },
  );

  it.skipIf(noPygit2 !== null)(
    `pygit2 (libgit2): clone with credentials, push, a non-fast-forward refused${noPygit2 ? ` (skipped: ${noPygit2})` : ''}`,
    async () => {
      const dir = join(await tempDir('gitrep-pygit2-'), 'p');
      const env = { URL: url, TOKEN: token, DIR: dir };
      const prelude = `
import os, pygit2
url, tok, d = os.environ['URL'], os.environ['TOKEN'], os.environ['DIR']
class CB(pygit2.RemoteCallbacks):
    def __init__(self):
        super().__init__(credentials=pygit2.UserPass('x', tok))
        self.rejected = []
    def push_update_reference(self, refname, message):
        if message:
            self.rejected.append((refname, message))
`;
      const first = await python(
        `${prelude}
repo = pygit2.clone_repository(url, d, callbacks=CB())
open(os.path.join(d, 'lg2.txt'), 'w').write('libgit2\\n')
repo.index.add('lg2.txt'); repo.index.write()
sig = pygit2.Signature('L', 'l@example.com')
oid = repo.create_commit('HEAD', sig, sig, 'libgit2', repo.index.write_tree(), [repo.head.target])
cb = CB()
repo.remotes['origin'].push(['HEAD:refs/heads/libgit2'], callbacks=cb)
print('pushed', oid, cb.rejected)
`,
        env,
      );
      expect(first.code, first.out).toBe(0);
      const sha = /pushed ([0-9a-f]{40}) \[\]/.exec(first.out)?.[1];
      expect(sha, first.out).toBeDefined();
      expect(await lsRemote(authed())).toContain(`${sha!}\trefs/heads/libgit2`);
      await moveMain();
      const second = await python(
        `${prelude}
repo = pygit2.Repository(d)
cb = CB()
try:
    repo.remotes['origin'].push(['refs/heads/main:refs/heads/main'], callbacks=cb)
    print('rejected:', cb.rejected)
except Exception as e:
    print('refused:', e)
`,
        env,
      );
      expect(second.out).toMatch(
        /(rejected: \[\('refs\/heads\/main', '.*(fetch first|fast-forward).*'\)\]|refused:.*(fast-?forward|fetch first|not present locally))/i,
      );
      expect(await lsRemote(authed())).not.toContain(`${sha!}\trefs/heads/main`);
    },
  );
});
