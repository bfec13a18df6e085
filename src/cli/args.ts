import { InvalidArgumentError, type Command } from 'commander';
import { ADMIN_USER, checkName, checkPrincipal } from '../auth/directory.js';
import { errorMessage } from '../domain/errors.js';
import { parseRepoId } from '../domain/repo-id.js';

/** USAGE_EXIT_CODE is the exit code of a command line that is wrong before any node is asked. */
export const USAGE_EXIT_CODE = 2;

/** ROLES are repository roles and token scopes; ORG_ROLES are roles in an organisation. */
export const ROLES = ['read', 'write', 'admin'] as const;
export const ORG_ROLES = ['member', 'owner'] as const;

/**
 * commandGroup adds a command with subcommands whose argument errors (a missing argument, a value
 * not among the choices, a malformed name) are one `git-replication: …` line and exit code 2,
 * so a script can tell a wrong command line from a refusal by the server (exit 1). The settings
 * are copied to the subcommands made after this, so it must be called before adding them.
 */
export function commandGroup(program: Command, name: string, description: string): Command {
  return program
    .command(name)
    .description(description)
    .configureOutput({ outputError: (str, write) => write(str.replace(/^error: /, 'git-replication: ')) })
    .exitOverride((err) => process.exit(err.exitCode === 0 ? 0 : USAGE_EXIT_CODE));
}

/** validated turns a validator that throws into a commander argument parser (its message kept). */
export function validated<T>(check: (value: string) => T): (value: string) => T {
  return (value) => {
    try {
      return check(value);
    } catch (err) {
      throw new InvalidArgumentError(errorMessage(err));
    }
  };
}

/** parseRepoArg checks `owner/name` by the server's own rule (domain/repo-id). */
export const parseRepoArg = validated((v) => parseRepoId(v) as string);

/** parseCursorArg takes a listing cursor: a repository (`owner/name`) or a cursor the cluster sealed (`c1~…`, from next_cursor). */
export const parseCursorArg = validated((v) => (/^c1~[A-Za-z0-9_-]{1,400}$/.test(v) ? v : (parseRepoId(v) as string)));

/** parseNewUserArg checks the name of a user to create by the server's rule. */
export const parseNewUserArg = validated((v) => checkName(v, 'user name'));

/** parseUserArg checks the name of an existing user (the built-in admin among them). */
export const parseUserArg = validated((v) => (v === ADMIN_USER ? v : checkName(v, 'user name')));

/** parseOrgArg checks an organisation name by the server's rule. */
export const parseOrgArg = validated((v) => checkName(v, 'organisation name'));

/** parseGranteeArg reads `user:NAME` or `org:NAME`; a bare NAME is `user:NAME`. */
export const parseGranteeArg = validated((v) => checkPrincipal(v.includes(':') ? v : `user:${v}`));

/** parseLimitArg reads a page size: an integer from 1 to 1000 (the server's bound). */
export const parseLimitArg = validated((v) => {
  if (!/^[0-9]{1,4}$/.test(v) || Number(v) < 1 || Number(v) > 1000) throw new Error('must be an integer from 1 to 1000');
  return Number(v);
});

const UNIT_MS: Record<string, number> = { m: 60_000, h: 3_600_000, d: 86_400_000, w: 604_800_000 };

/**
 * expiryTime turns `--expires` into an ISO time: a duration from `now` (`90m`, `12h`, `30d`,
 * `2w`) or an ISO 8601 time. Whether it is in the future is the server's to say (its clock decides).
 */
export function expiryTime(value: string, now: number = Date.now()): string {
  const m = /^([0-9]{1,6})([mhdw])$/.exec(value);
  if (m) {
    const n = Number(m[1]);
    if (n === 0) throw new Error('a duration must be more than 0');
    return new Date(now + n * UNIT_MS[m[2]!]!).toISOString();
  }
  if (!/^[0-9]{4}-[0-9]{2}-[0-9]{2}/.test(value) || Number.isNaN(Date.parse(value))) {
    throw new Error(`'${value}' is neither a duration (30d, 12h, 90m, 2w) nor an ISO time`);
  }
  return new Date(value).toISOString();
}

/** parseExpiresArg is expiryTime as a commander parser. */
export const parseExpiresArg = validated((v) => expiryTime(v));

/** repoPath is the API path of a repository (already checked by parseRepoArg). */
export function repoPath(repoId: string): string {
  const [owner = '', name = ''] = repoId.split('/');
  return `/repos/${encodeURIComponent(owner)}/${encodeURIComponent(name)}`;
}

/** JsonOption is the `--json` flag: print the server's JSON answer instead of the human lines. */
export interface JsonOption {
  json?: boolean;
}

/** printAnswer writes the JSON answer with `--json`, else the human lines. */
export function printAnswer(o: JsonOption, answer: unknown, human: () => string): void {
  process.stdout.write(o.json ? `${JSON.stringify(answer, null, 2)}\n` : human());
}
