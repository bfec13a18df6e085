import { defineConfig } from 'vitest/config';

// Two tiers, one command each; `npm test` (vitest run) runs both.
// unit: in-process tests next to the code (real git, SQLite and temp dirs; no node processes).
// integration: the built server as real node processes, against the real git client.
export default defineConfig({
  test: {
    testTimeout: 120_000,
    hookTimeout: 120_000,
    pool: 'forks',
    // Integration tests spawn several node processes and git; two files at a time fit 2 cores.
    maxWorkers: 2,
    reporters: ['default'],
    projects: [
      { extends: true, test: { name: 'unit', include: ['src/**/*.test.ts', 'chaos/**/*.test.ts', 'bench/**/*.test.ts'] } },
      { extends: true, test: { name: 'integration', include: ['test/**/*.test.ts'] } },
    ],
  },
});
