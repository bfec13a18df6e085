#!/usr/bin/env node
import { Command } from 'commander';
import { VERSION } from '../app.js';
import { registerBench } from './bench.js';
import { registerAdmin } from './admin.js';
import { registerServe } from './serve.js';
import { registerStatus } from './status.js';
import { registerUp } from './up.js';

const program = new Command('git-replication')
  .description('a Git hosting cluster with synchronous quorum replication')
  .version(VERSION);
registerServe(program);
registerUp(program);
registerStatus(program);
registerBench(program);
registerAdmin(program);
await program.parseAsync(process.argv);
