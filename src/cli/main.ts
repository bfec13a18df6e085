#!/usr/bin/env node
import { Command } from 'commander';
import { VERSION } from '../app.js';
import { registerMaintenance } from './maintenance.js';
import { registerAdmin } from './admin.js';
import { registerBackup } from './backup.js';
import { registerKeys } from './keys.js';
import { registerOrgs } from './orgs.js';
import { registerRepos } from './repos.js';
import { registerRestore } from './restore.js';
import { registerServe } from './serve.js';
import { registerStatus } from './status.js';
import { registerTokens } from './tokens.js';
import { registerUp } from './up.js';
import { registerUsers } from './users.js';

const program = new Command('git-replication')
  .description('a Git hosting cluster with synchronous quorum replication')
  .version(VERSION);
registerServe(program);
registerUp(program);
registerStatus(program);
registerAdmin(program);
registerMaintenance(program);
registerUsers(program);
registerOrgs(program);
registerRepos(program);
registerTokens(program);
registerKeys(program);
registerBackup(program);
registerRestore(program);
await program.parseAsync(process.argv);
