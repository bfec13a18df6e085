import { Command } from 'commander';
import { VERSION } from '../app.js';
import { registerAdmin } from './admin.js';
import { registerBackup } from './backup.js';
import { examples } from './help.js';
import { registerKeys } from './keys.js';
import { registerMaintenance } from './maintenance.js';
import { registerOrgs } from './orgs.js';
import { registerRepos } from './repos.js';
import { registerRestore } from './restore.js';
import { registerServe } from './serve.js';
import { registerStatus } from './status.js';
import { registerTokens } from './tokens.js';
import { registerUp } from './up.js';
import { registerUsers } from './users.js';

/** buildProgram assembles the `git-replication` command tree without running it (main.ts parses argv; help.test.ts walks it). */
export function buildProgram(): Command {
  const program = new Command('git-replication')
    .description('a Git hosting cluster with synchronous quorum replication')
    .version(VERSION)
    .addHelpText(
      'after',
      examples('git-replication up', 'git-replication status', 'git-replication repo create acme/site', 'git-replication <command> --help'),
    );
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
  return program;
}
