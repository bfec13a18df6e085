/**
 * examples is the "Examples:" section a command's `--help` ends with (commander's
 * `addHelpText('after', …)`); every command has one, help.test.ts walks the tree to check.
 */
export function examples(...lines: string[]): string {
  return `\nExamples:\n${lines.map((l) => `  ${l}`).join('\n')}`;
}
