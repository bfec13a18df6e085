#!/usr/bin/env node
/**
 * `node dist-tools/bench/store-bytes.js [repos]` (default 2000): what the SQLite store keeps per
 * repository, and what reading every repo record costs (docs/SCALE.md). It writes, through the
 * store's own API, each repo as a create does (the repo record and its decided transaction) and
 * three confirmed replicas, then reports the file's bytes per repo with the transaction records
 * and after they are pruned (WAL checkpointed), and the median time of `listRepos`.
 */
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SqliteStore } from '../src/store/sqlite/sqlite-store.js';
import { median } from './util.js';

const repos = Number(process.argv[2] ?? 2000);
if (!Number.isInteger(repos) || repos < 1) throw new Error(`'${process.argv[2]}' is not a positive integer`);
const dir = mkdtempSync(join(tmpdir(), 'store-bytes-'));
const file = join(dir, 'cluster.db');
const size = (): number => ['', '-wal'].reduce((a, s) => a + (statSync(`${file}${s}`, { throwIfNoEntry: false })?.size ?? 0), 0);
const checksum = 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855';
try {
  let store = new SqliteStore(file);
  const empty = size();
  for (let i = 0; i < repos; i++) {
    const repoId = `owner${i % 100}/repo-${i}`;
    const incarnation = randomUUID();
    await store.commitCreate({
      txnId: randomUUID(),
      coordinator: 'node-1',
      record: {
        repoId,
        incarnation,
        replicas: ['node-1', 'node-2', 'node-3'],
        generation: 0,
        checksum,
        createdAt: new Date().toISOString(),
      },
    });
    for (const nodeId of ['node-1', 'node-2', 'node-3'])
      await store.confirmReplica({ repoId, nodeId, incarnation, generation: 0, checksum });
  }
  const withTxns = size();
  const times: number[] = [];
  for (let i = 0; i < 7; i++) {
    const t = performance.now();
    await store.listRepos();
    times.push(performance.now() - t);
  }
  await store.pruneTxns(Date.now() + 1);
  await store.close();
  store = new SqliteStore(file); // closing checkpointed the WAL; reopen to read the settled size
  const settled = size();
  await store.close();
  process.stdout.write(
    `${JSON.stringify({ repos, bytesPerRepoWithTxns: Math.round((withTxns - empty) / repos), bytesPerRepo: Math.round((settled - empty) / repos), listReposMsP50: Math.round(median(times) * 10) / 10 })}\n`,
  );
} finally {
  rmSync(dir, { recursive: true, force: true });
}
