import type { Command } from 'commander';
import { describe, expect, it } from 'vitest';
import { buildProgram } from './program.js';

/** commandsOf lists a command and every command under it, with its path (`repo grant`). */
function commandsOf(cmd: Command, path: string[] = []): Array<{ path: string; cmd: Command }> {
  return [{ path: path.join(' ') || '(root)', cmd }, ...cmd.commands.flatMap((c) => commandsOf(c, [...path, c.name()]))];
}

/** helpOf is what `--help` prints for a command, the text added after it included. */
function helpOf(cmd: Command): string {
  let text = '';
  cmd.configureOutput({
    writeOut: (s) => {
      text += s;
    },
    writeErr: (s) => {
      text += s;
    },
  });
  cmd.outputHelp();
  return text;
}

describe('--help', () => {
  const all = commandsOf(buildProgram());

  it('walks the whole tree (groups and their subcommands)', () => {
    const paths = all.map((c) => c.path);
    for (const p of [
      '(root)',
      'serve',
      'up',
      'status',
      'repair',
      'verify',
      'rebalance',
      'node list',
      'repo grant',
      'token create',
      'key add',
    ])
      expect(paths).toContain(p);
  });

  it.each(all.map((c) => [c.path, c.cmd] as const))('%s has an Examples section of git-replication command lines', (_path, cmd) => {
    const section = /\nExamples:\n((?: {2}.+\n?)+)/.exec(helpOf(cmd));
    expect(section, 'no "Examples:" section').not.toBeNull();
    const lines = section![1]!
      .trimEnd()
      .split('\n')
      .map((l) => l.trim());
    expect(lines.length).toBeGreaterThan(0);
    // Each example runs this very command (a group's may run its subcommands).
    const name = cmd.parent ? [...ancestors(cmd), cmd.name()].join(' ') : 'git-replication';
    for (const l of lines) expect(l).toContain(name);
  });
});

function ancestors(cmd: Command): string[] {
  const names: string[] = [];
  for (let p = cmd.parent; p; p = p.parent) names.unshift(p.parent ? p.name() : 'git-replication');
  return names;
}
