import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

const PROJECT = join(import.meta.dirname, '..');
/** COMPILED is the benchmark as it runs (`npm run build:tools`): servers.ts finds the project from there. */
const COMPILED = join(PROJECT, 'dist-tools', 'bench', 'servers.js');

describe('the copy of the app the benchmark runs its nodes from', () => {
  // Until 2026-12-04 the copy left helpers/ out: every benchmark ran its nodes with the Node.js
  // spawn helper instead of the Python one an installed node uses.
  it.runIf(existsSync(join(PROJECT, 'dist', 'cli', 'main.js')) && existsSync(COMPILED))(
    "holds everything the package ships (package.json's files), so its nodes start git as an installed node does",
    async () => {
      const dir = mkdtempSync(join(tmpdir(), 'bench-snapshot-'));
      try {
        const { snapshotApp } = (await import(COMPILED)) as { snapshotApp: (dir: string) => Promise<string> };
        const dist = await snapshotApp(join(dir, 'app'));
        expect(dist).toBe(join(dir, 'app', 'dist'));
        const files = (JSON.parse(readFileSync(join(PROJECT, 'package.json'), 'utf8')) as { files: string[] }).files;
        for (const f of files) expect(existsSync(join(dir, 'app', f)), f).toBe(true);
        expect(existsSync(join(dir, 'app', 'helpers', 'spawn-helper.py'))).toBe(true);
        expect(existsSync(join(dir, 'app', 'hooks', 'perl', 'proc-receive'))).toBe(true);
        const relay = join(PROJECT, 'dist', 'hooks', 'c', 'proc-receive');
        if (existsSync(relay)) expect(existsSync(join(dist, 'hooks', 'c', 'proc-receive'))).toBe(true);
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    },
  );
});
