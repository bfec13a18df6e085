import { spawn } from 'node:child_process';
import { GIT_ENV, gitOk } from './git.js';

/**
 * makeLargeRepo writes a bare repository the size of a real project's (by default like express:
 * 11,000 commits, 3,900 refs, a pack of several MB) with `git fast-import`, in seconds, so the
 * large-repo tests need nothing outside this repository. Content comes from a fixed-seed
 * generator: every run builds the same objects.
 */
export async function makeLargeRepo(dir: string, opts: { commits?: number; branches?: number; tags?: number } = {}): Promise<void> {
  const commits = opts.commits ?? 11_000;
  const branches = opts.branches ?? 1_900;
  const tags = opts.tags ?? 2_000;
  await gitOk(['init', '-q', '--bare', '-b', 'main', dir]);
  const child = spawn('git', ['fast-import', '--quiet', '--done'], { cwd: dir, env: GIT_ENV, stdio: ['pipe', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => {
    stderr += d.toString();
  });
  const done = new Promise<number | null>((resolve) => child.on('close', resolve));
  // xorshift32: 32-bit integer arithmetic only (a float LCG loses precision and cycles).
  let seed = 42;
  const random = (): number => {
    seed ^= seed << 13;
    seed ^= seed >>> 17;
    seed ^= seed << 5;
    return seed >>> 0;
  };
  const words = [
    'route',
    'request',
    'response',
    'app',
    'middleware',
    'router',
    'param',
    'query',
    'view',
    'render',
    'send',
    'json',
    'status',
    'header',
    'cookie',
    'session',
    'static',
    'error',
    'next',
    'listen',
  ];
  const text = (n: number): string => {
    const out: string[] = [];
    for (let i = 0; i < n; i++) out.push(words[random() % words.length]! + (random() % 1_000_000).toString(36));
    return out.join(' ');
  };
  const write = (s: string): Promise<void> =>
    new Promise((resolve) => {
      if (child.stdin.write(s)) resolve();
      else child.stdin.once('drain', () => resolve());
    });
  const t0 = 1_300_000_000;
  for (let i = 1; i <= commits; i++) {
    // Each version new text (no deltas), so the pack is the size of a real one (~10 MB).
    const body = `${text(150 + (random() % 100))}\n`;
    const msg = `commit ${i}: ${text(6)}\n`;
    await write(
      `commit refs/heads/main\nmark :${i}\ncommitter Dev <dev@example.com> ${t0 + i * 600} +0000\ndata ${Buffer.byteLength(msg)}\n${msg}` +
        `${i > 1 ? `from :${i - 1}\n` : ''}M 100644 inline lib/file${i % 60}.js\ndata ${Buffer.byteLength(body)}\n${body}\n`,
    );
  }
  for (let b = 0; b < branches; b++) await write(`reset refs/heads/branch-${b}\nfrom :${1 + (random() % commits)}\n\n`);
  for (let t = 0; t < tags; t++) await write(`reset refs/tags/v${Math.floor(t / 100)}.${t % 100}.0\nfrom :${1 + (random() % commits)}\n\n`);
  await write('done\n');
  child.stdin.end();
  const code = await done;
  if (code !== 0) throw new Error(`git fast-import failed (${code}): ${stderr}`);
  await gitOk(['repack', '-q', '-a', '-d'], { cwd: dir });
}
