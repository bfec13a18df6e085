import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { GIT_ENV } from '../../test/helpers/git.js';
import { PassThrough, Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { encodePktLine } from './pkt-line.js';
import { LINKS_CHECKED, linksState } from './repo-storage.js';
import { receivePackConfig, SHALLOW_LOOKUPS_MAX, watchShallow } from './services.js';

const ENV = GIT_ENV;

describe("receive-pack's configuration", () => {
  const root = mkdtempSync(join(tmpdir(), 'services-'));
  afterAll(() => rmSync(root, { recursive: true, force: true }));
  const sh = (cwd: string, args: string[], env: NodeJS.ProcessEnv = ENV): string =>
    execFileSync('git', args, { cwd, env, encoding: 'utf8' }).trim();

  /** pushTraced pushes one more commit to a fresh bare repo through receive-pack run with `config`; returns git's trace. */
  function pushTraced(name: string, config: Record<string, string>): { trace: string; landed: boolean } {
    const server = join(root, `${name}.git`);
    const work = join(root, `${name}-w`);
    sh(root, ['init', '-q', '--bare', server]);
    sh(root, ['init', '-q', '-b', 'main', work]);
    sh(work, ['commit', '-q', '--allow-empty', '-m', 'a']);
    sh(work, ['push', '-q', server, 'main']);
    const head = sh(work, ['commit-tree', '-p', 'HEAD', '-m', 'b', sh(work, ['rev-parse', 'HEAD^{tree}'])]);
    const trace = join(root, `${name}.trace`);
    const rp = ['git', ...Object.entries(config).flatMap(([k, v]) => ['-c', `${k}=${v}`]), 'receive-pack'].join(' ');
    sh(work, ['push', '-q', `--receive-pack=${rp}`, server, `${head}:refs/heads/main`], { ...ENV, GIT_TRACE: trace });
    return { trace: readFileSync(trace, 'utf8'), landed: sh(server, ['rev-parse', 'main']) === head };
  }

  it("starts no for-each-ref for the quarantine's alternate (this same repo) in its connectivity check", () => {
    const node = receivePackConfig('/nonexistent-hooks', 1 << 20, []);
    const ours = {
      'core.alternateRefsCommand': node['core.alternateRefsCommand']!,
      'core.warnAmbiguousRefs': node['core.warnAmbiguousRefs']!,
    };
    expect(ours).toEqual({ 'core.alternateRefsCommand': 'true', 'core.warnAmbiguousRefs': 'false' });
    const plain = pushTraced('plain', {});
    expect(plain.landed).toBe(true);
    expect(plain.trace).toMatch(/for-each-ref/);
    const tuned = pushTraced('tuned', ours);
    expect(tuned.landed).toBe(true);
    expect(tuned.trace).toMatch(/rev-list --objects --stdin/);
    expect(tuned.trace).not.toMatch(/for-each-ref/);
  });

  it('still refuses a pushed tip whose history is missing (the check runs against the refs)', () => {
    const server = join(root, 'gap.git');
    const work = join(root, 'gap-w');
    sh(root, ['init', '-q', '--bare', server]);
    sh(root, ['init', '-q', '-b', 'main', work]);
    sh(work, ['commit', '-q', '--allow-empty', '-m', 'a']);
    sh(work, ['commit', '-q', '--allow-empty', '-m', 'b']);
    const tip = sh(work, ['rev-parse', 'HEAD']);
    // A pack of the tip and its tree only: its parent is in neither the pack nor the repo.
    const pack = execFileSync('git', ['pack-objects', '--stdout'], {
      cwd: work,
      env: ENV,
      input: `${tip}\n${sh(work, ['rev-parse', 'HEAD^{tree}'])}\n`,
    });
    const cmd = `${'0'.repeat(40)} ${tip} refs/heads/main\0report-status\n`;
    const pkt = (line: string): string => (line.length + 4).toString(16).padStart(4, '0') + line;
    const input = Buffer.concat([Buffer.from(`${pkt(cmd)}0000`), pack]);
    const node = receivePackConfig('/nonexistent-hooks', 1 << 20, []);
    const out = execFileSync(
      'git',
      [
        '-c',
        `core.alternateRefsCommand=${node['core.alternateRefsCommand']!}`,
        '-c',
        'core.warnAmbiguousRefs=false',
        'receive-pack',
        server,
      ],
      { env: ENV, input },
    ).toString('latin1');
    expect(out).toMatch(/ng refs\/heads\/main missing necessary objects/);
    expect(() => sh(server, ['rev-parse', '--verify', '-q', 'refs/heads/main'])).toThrow();
  });
});

describe('watchShallow', () => {
  const root = mkdtempSync(join(tmpdir(), 'watch-shallow-'));
  afterAll(() => rmSync(root, { recursive: true, force: true }));

  /** feed passes a push preamble of `count` shallow lines naming `oid` through the watch of `repo`. */
  async function feed(repo: string, oid: string, count: number): Promise<void> {
    const lines = Array.from({ length: count }, () => encodePktLine(`shallow ${oid}\n`));
    await pipeline(Readable.from([Buffer.concat([...lines, Buffer.from('0000PACK')])]), watchShallow(repo), new PassThrough().resume());
  }

  it(`looks up at most SHALLOW_LOOKUPS_MAX lines of a push; past it the replica loses its mark`, async () => {
    const repo = join(root, 'r.git');
    execFileSync('git', ['init', '-q', '--bare', repo], { env: ENV });
    const blob = execFileSync('git', ['hash-object', '-w', '--stdin'], { cwd: repo, env: ENV, input: 'b\n', encoding: 'utf8' }).trim();
    writeFileSync(join(repo, LINKS_CHECKED), 'x\n');
    await feed(repo, blob, SHALLOW_LOOKUPS_MAX);
    expect(linksState(repo) === 'checked').toBe(true);
    await feed(repo, blob, SHALLOW_LOOKUPS_MAX + 1);
    expect(linksState(repo) === 'checked').toBe(false);
  });
});
