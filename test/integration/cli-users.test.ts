import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MAIN, TestCluster, freePort, waitFor } from '../helpers/cluster.js';
import { gitOk, lsRemote, workRepo } from '../helpers/git.js';

interface CliRun {
  code: number;
  stdout: string;
  stderr: string;
}

describe('the user, org, repo and token commands against a cluster with token auth', () => {
  let c: TestCluster;
  let admin = '';
  let alice = '';
  let aliceId = '';
  let bob = '';
  // The CLI runs in an empty directory so a developer's ./data/admin-token cannot leak in.
  let cwd = '';
  let work = '';

  /** cli runs the built CLI as a real process against node `node`, with `token` (none: no token at all). */
  function cli(args: string[], token: string | null, node = 1): Promise<CliRun> {
    const env: NodeJS.ProcessEnv = { ...process.env };
    delete env.GIT_REPLICATION_TOKEN;
    // A user's token comes by the environment, as a script would pass it; the admin's by flag.
    if (token !== null && token !== admin) env.GIT_REPLICATION_TOKEN = token;
    const auth = token === admin ? ['--token', admin] : [];
    return new Promise((resolve) => {
      execFile(process.execPath, [MAIN, ...args, '--url', c.url(node), ...auth], { cwd, env, timeout: 60_000 }, (err, stdout, stderr) => {
        resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr });
      });
    });
  }

  async function ok(args: string[], token: string | null, node = 1): Promise<string> {
    const r = await cli(args, token, node);
    expect(r.code, `${args.join(' ')}: ${r.stderr}`).toBe(0);
    return r.stdout;
  }

  /** expectFailure checks a one-line `git-replication: …` answer with the exit code, no stack trace. */
  function expectFailure(r: CliRun, code: 1 | 2, message: RegExp): void {
    expect(r.code, r.stderr).toBe(code);
    expect(r.stderr.trim()).toMatch(message);
    expect(r.stderr).not.toMatch(/TypeError|\n\s+at /);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stdout).toBe('');
  }

  /** pollUntil401 runs `repo list` with a token on `node` until it is refused; returns the time it took. */
  async function pollUntil401(token: string, node: number, message: RegExp): Promise<number> {
    const start = Date.now();
    let last: CliRun = { code: 0, stdout: '', stderr: '' };
    await waitFor(
      async () => {
        last = await cli(['repo', 'list'], token, node);
        return last.code !== 0;
      },
      10_000,
      `token refused on node-${node}`,
    );
    expectFailure(last, 1, message);
    return Date.now() - start;
  }

  beforeAll(async () => {
    c = await TestCluster.start({ nodes: 3, env: { AUTH: 'tokens' } });
    admin = await c.adminToken();
    cwd = await mkdtemp(join(tmpdir(), 'gitrep-cli-users-'));
  });
  afterAll(async () => {
    await c?.destroy();
    for (const d of [cwd, work]) if (d) await rm(d, { recursive: true, force: true });
  });

  it('an admin adds users and makes a token for one; the token alone is on stdout', async () => {
    expect(await ok(['user', 'add', 'alice'], admin)).toBe('user alice added\n');
    expect(await ok(['user', 'add', 'bob'], admin)).toBe('user bob added\n');
    const list = JSON.parse(await ok(['user', 'list', '--json'], admin)) as {
      users: Array<{ name: string; admin: boolean; disabled: boolean }>;
    };
    expect(list.users.map((u) => u.name).sort()).toEqual(['admin', 'alice', 'bob']);
    expect(list.users.find((u) => u.name === 'alice')).toMatchObject({ admin: false, disabled: false });
    expect(await ok(['user', 'list'], admin)).toMatch(/^alice\tuser\tenabled\t\S+$/m);

    const made = await cli(['token', 'create', 'alice-ci', '--user', 'alice', '--scope', 'write'], admin);
    expect(made.code, made.stderr).toBe(0);
    expect(made.stdout).toMatch(/^grt_\S+\n$/);
    alice = made.stdout.trim();
    const about = /^token ([0-9a-f]+) 'alice-ci' for alice, scope write, expires never$/m.exec(made.stderr);
    expect(about, made.stderr).not.toBeNull();
    aliceId = about![1]!;

    const before = Date.now();
    const forBob = JSON.parse(
      await ok(['token', 'create', 'bob-ci', '--user', 'bob', '--scope', 'read', '--expires', '30d', '--json'], admin),
    ) as { token: string; expiresAt: string; scope: string };
    bob = forBob.token;
    expect(forBob.scope).toBe('read');
    expect(Math.abs(Date.parse(forBob.expiresAt) - (before + 30 * 86_400_000))).toBeLessThan(60_000);
  });

  it('alice makes an organisation, adds bob and creates a private repo in it', async () => {
    expect(await ok(['org', 'create', 'acme'], alice)).toBe('organisation acme created, owner alice\n');
    // Changing members needs an admin-scoped token (an owner's write token is refused).
    expect((await cli(['org', 'add-member', 'acme', 'bob'], alice)).stderr).toMatch(/needs an admin-scoped token/);
    const aliceOrg = JSON.parse(await ok(['token', 'create', 'alice-org', '--user', 'alice', '--scope', 'admin', '--json'], admin)) as {
      id: string;
      token: string;
    };
    expect(await ok(['org', 'add-member', 'acme', 'bob'], aliceOrg.token)).toBe('bob is a member of acme\n');
    await ok(['token', 'revoke', aliceOrg.id], admin);
    const org = JSON.parse(await ok(['org', 'show', 'acme', '--json'], alice)) as {
      name: string;
      members: Array<{ user: string; role: string }>;
    };
    expect(org.members.sort((a, b) => a.user.localeCompare(b.user))).toEqual([
      { user: 'alice', role: 'owner' },
      { user: 'bob', role: 'member' },
    ]);
    expect(await ok(['repo', 'create', 'acme/site'], alice)).toMatch(
      /^acme\/site created, private, replicas (node-\d ?){3} \(write quorum 2\)\n$/,
    );
    // Private: an anonymous caller does not see it.
    expectFailure(await cli(['repo', 'show', 'acme/site'], null, 2), 1, /^git-replication: 404 repository acme\/site not found$/);
    // alice administers acme/site, but her write-scoped token caps that at write: grants need admin.
    expectFailure(
      await cli(['repo', 'grants', 'acme/site'], alice),
      1,
      /^git-replication: 403 permission denied: admin access to acme\/site needed$/,
    );
    const aliceAdmin = (await ok(['token', 'create', 'alice-admin', '--user', 'alice', '--scope', 'admin'], admin)).trim();
    expect(await ok(['repo', 'grants', 'acme/site'], aliceAdmin)).toBe('acme/site\towner acme\tprivate\n  no grants\n');
    // A cluster operation still needs a cluster admin, whatever the token's scope.
    expectFailure(await cli(['user', 'list'], aliceAdmin), 1, /^git-replication: 403 user alice is not a cluster admin$/);
  });

  it('the admin grants bob write and makes the repo public', async () => {
    expect(await ok(['repo', 'grant', 'acme/site', 'user:bob', 'write'], admin)).toBe('user:bob has write on acme/site\n');
    const grants = JSON.parse(await ok(['repo', 'grants', 'acme/site', '--json'], admin, 2)) as { grants: unknown[] };
    expect(grants.grants).toEqual([{ grantee: 'user:bob', role: 'write' }]);
    expect(await ok(['repo', 'visibility', 'acme/site', 'public'], admin)).toBe('acme/site is public\n');
    const show = await ok(['repo', 'show', 'acme/site'], null, 3);
    expect(show).toMatch(/^acme\/site\tpublic\tgeneration 0\twrite quorum 2$/m);
    expect(show.match(/^ {2}node-\d\tin_sync\tlive\tgeneration 0$/gm)).toHaveLength(3);
    // A bare name is a user; revoke takes the grant away again.
    expect(await ok(['repo', 'revoke', 'acme/site', 'bob'], admin)).toBe('user:bob has no grant on acme/site\n');
    expect(await ok(['repo', 'grant', 'acme/site', 'bob', 'write'], admin)).toBe('user:bob has write on acme/site\n');
  });

  it('repo list --all follows next_cursor page by page', async () => {
    for (const id of ['acme/docs', 'alice/notes']) await ok(['repo', 'create', id], admin);
    const all = ['acme/docs', 'acme/site', 'alice/notes'];
    const paged = JSON.parse(await ok(['repo', 'list', '--all', '--limit', '1', '--json'], admin)) as {
      repos: string[];
      count: number;
      next_cursor: string | null;
    };
    expect(paged).toEqual({ repos: all, count: 3, next_cursor: null });
    expect(await ok(['repo', 'list', '--all', '--limit', '1'], admin, 2)).toBe(all.map((r) => `${r}\n`).join(''));
    const first = await cli(['repo', 'list', '--limit', '1'], admin);
    expect(first.stdout).toBe('acme/docs\n');
    expect(first.stderr).toBe('more: --cursor acme/docs (or --all)\n');
    expect(await ok(['repo', 'list', '--limit', '1', '--cursor', 'acme/docs'], admin)).toBe('acme/site\n');
    // Anonymous callers list only the public repo; bob (a member of acme) also acme's.
    expect(await ok(['repo', 'list', '--all', '--limit', '1'], null, 3)).toBe('acme/site\n');
    expect(await ok(['repo', 'list', '--all'], bob, 3)).toBe('acme/docs\nacme/site\n');
    expect(await ok(['repo', 'delete', 'acme/docs'], admin)).toBe('acme/docs deleted\n');
  });

  it("alice's token pushes to acme/site with real git; every node serves the push", async () => {
    work = await workRepo();
    await gitOk(['push', `http://x:${alice}@127.0.0.1:${c.node(2).port}/acme/site.git`, 'HEAD:main'], { cwd: work });
    const head = (await gitOk(['rev-parse', 'HEAD'], { cwd: work })).trim();
    for (const i of [1, 2, 3]) expect(await lsRemote(c.repoUrl(i, 'acme/site'))).toContain(`${head}\trefs/heads/main`);
  });

  it('a revoked token fails with 401 on another node once its 1 s cache entry is gone', async () => {
    const listed = await ok(['token', 'list', '--user', 'alice'], admin);
    expect(listed).toMatch(new RegExp(`^${aliceId}\\talice-ci\\talice\\twrite\\tcreated \\S+\\texpires never\\tlast used \\S+$`, 'm'));
    const own = JSON.parse(await ok(['token', 'list', '--json'], alice)) as { tokens: Array<{ id: string; name: string }> };
    expect(own.tokens.map((t) => t.name)).toEqual(['alice-ci', 'alice-admin']);
    expect(own.tokens[0]?.id).toBe(aliceId);
    // Node 3 has just checked alice's token, so it holds it in its cache when node 1 revokes it.
    expect(await ok(['repo', 'list'], alice, 3)).toBe('acme/site\nalice/notes\n');
    expect(await ok(['token', 'revoke', aliceId], admin)).toBe(`token ${aliceId} ('alice-ci' of alice) revoked\n`);
    // Measured on the server's clock, not the CLI's (each try spawns a process, slow on a loaded
    // machine): 1.2 s after the revocation, node 3's cache entry has expired and the first try fails.
    await new Promise((r) => setTimeout(r, 1_200));
    expectFailure(await cli(['repo', 'list'], alice, 3), 1, /^git-replication: 401 invalid token$/);
    expectFailure(await cli(['token', 'revoke', aliceId], admin), 1, new RegExp(`^git-replication: 404 token ${aliceId} not found$`));
  });

  it("a disabled user's token gets 401, and works again once enabled", async () => {
    await ok(['repo', 'list'], bob, 2);
    expect(await ok(['user', 'disable', 'bob'], admin)).toBe('user bob disabled\n');
    await pollUntil401(bob, 2, /^git-replication: 401 user bob is disabled$/);
    expect(await ok(['user', 'enable', 'bob'], admin)).toBe('user bob enabled\n');
    await waitFor(async () => (await cli(['repo', 'list'], bob, 2)).code === 0, 10_000, 'bob enabled on node-2');
    expect(await ok(['org', 'remove-member', 'acme', 'bob'], admin)).toBe('bob removed from acme\n');
  });

  it('org delete removes an organisation that holds no repository', async () => {
    expect(await ok(['org', 'create', 'short-lived'], admin)).toMatch(/^organisation short-lived created/);
    expect(await ok(['org', 'delete', 'short-lived'], admin)).toBe('organisation short-lived deleted\n');
    expectFailure(await cli(['org', 'show', 'short-lived'], admin), 1, /^git-replication: 404 organisation short-lived not found$/);
    expectFailure(
      await cli(['org', 'delete', 'acme'], admin),
      1,
      /^git-replication: 409 organisation acme holds \d+ repositories: delete them first$/,
    );
  });

  it("the server's refusals are exit 1 with its message; a wrong command line is exit 2 before any call", async () => {
    expectFailure(
      await cli(['repo', 'grant', 'acme/site', 'user:nobody', 'read'], admin),
      1,
      /^git-replication: 400 no user named 'nobody'$/,
    );
    expectFailure(
      await cli(['repo', 'grant', 'acme/site', 'org:nobody', 'read'], admin),
      1,
      /^git-replication: 400 no organisation named 'nobody'$/,
    );
    expectFailure(await cli(['user', 'add', 'bob'], admin), 1, /^git-replication: 409 user bob already exists$/);
    expectFailure(await cli(['user', 'list'], bob), 1, /^git-replication: 403 /);
    // A closed port: exit 2 shows the command line was refused before any node was asked.
    const closed = `http://127.0.0.1:${await freePort()}`;
    const usage: Array<[string[], RegExp]> = [
      [['token', 'create', 'ci', '--scope', 'root'], /--scope.*'root' is invalid\. Allowed choices are read, write, admin\./],
      [['token', 'create', 'ci'], /required option '--scope <scope>' not specified/],
      [['token', 'create', 'ci', '--scope', 'read', '--expires', 'soon'], /'soon' is neither a duration/],
      [['repo', 'create', 'site'], /invalid repo id 'site': must be owner\/name/],
      [['repo', 'grant', 'acme/site', 'team:x', 'read'], /grantee must be 'user:<name>' or 'org:<name>'/],
      [['repo', 'grant', 'acme/site', 'bob', 'owner'], /'owner' is invalid for argument 'role'/],
      [['repo', 'visibility', 'acme/site', 'secret'], /'secret' is invalid for argument 'visibility'/],
      [['org', 'add-member', 'acme', 'bob', '--role', 'admin'], /'admin' is invalid\. Allowed choices are member, owner\./],
      [['repo', 'list', '--limit', '0'], /must be an integer from 1 to 1000/],
    ];
    for (const [args, message] of usage) {
      const r = await new Promise<CliRun>((resolve) => {
        execFile(process.execPath, [MAIN, ...args, '--url', closed, '--token', admin], { cwd }, (err, stdout, stderr) => {
          resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr });
        });
      });
      expectFailure(r, 2, new RegExp(`^git-replication: .*${message.source}`));
    }
  });
});
