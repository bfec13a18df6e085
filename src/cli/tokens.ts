import { Argument, Option, type Command } from 'commander';
import { commandGroup, parseExpiresArg, parseUserArg, printAnswer, ROLES, validated, type JsonOption } from './args.js';
import { addClientOptions, withApi, type ClientOptions } from './http-client.js';
import { examples } from './help.js';

interface TokenView {
  id: string;
  name: string;
  user: string;
  scope: string;
  createdAt: string;
  expiresAt?: string;
  lastUsedAt: string | null;
}
type Options = ClientOptions & JsonOption;

/** parseTokenName checks a token's name by the server's schema (1-100 of A-Z a-z 0-9 . _ @ -). */
const parseTokenName = validated((v) => {
  if (!/^[A-Za-z0-9._@-]{1,100}$/.test(v)) throw new Error('a token name is 1-100 characters of A-Z a-z 0-9 . _ @ -');
  return v;
});

function tokenLine(t: TokenView): string {
  return `${t.id}\t${t.name}\t${t.user}\t${t.scope}\tcreated ${t.createdAt}\texpires ${t.expiresAt ?? 'never'}\tlast used ${t.lastUsedAt ?? 'never'}\n`;
}

/**
 * registerTokens adds `token create|list|revoke`. `token create` prints the token alone on stdout
 * (`TOKEN=$(git-replication token create ci --scope write)`) and what it is on stderr.
 */
export function registerTokens(program: Command): void {
  const token = commandGroup(program, 'token', 'personal access tokens').addHelpText(
    'after',
    examples(
      'TOKEN=$(git-replication token create ci --scope write)',
      'git-replication token list',
      'git-replication token revoke 3f2a9c0d41b7e865',
    ),
  );
  addClientOptions(
    token
      .command('create')
      .description('create a token (shown only this once)')
      .addHelpText(
        'after',
        examples(
          'TOKEN=$(git-replication token create ci --scope write --expires 30d)',
          'git-replication token create laptop --scope admin --user alice',
        ),
      )
      .addArgument(new Argument('<name>').argParser(parseTokenName)),
  )
    .addOption(new Option('--scope <scope>', 'what the token may do, at most').choices(ROLES).makeOptionMandatory())
    .option('--user <user>', 'for this user (cluster admin only; default: yourself)', parseUserArg)
    .option('--expires <when>', 'a duration (30d, 12h, 90m, 2w) or an ISO time; default: never', parseExpiresArg)
    .option('--json', 'print the JSON answer (it holds the token)')
    .action(async (name: string, o: Options & { scope: string; user?: string; expires?: string }) =>
      withApi(o, async (api) => {
        const body = {
          name,
          scope: o.scope,
          ...(o.user !== undefined ? { user: o.user } : {}),
          ...(o.expires !== undefined ? { expires_at: o.expires } : {}),
        };
        const res = await api.post<TokenView & { token: string }>('/tokens', body);
        printAnswer(o, res, () => `${res.token}\n`);
        if (!o.json)
          process.stderr.write(`token ${res.id} '${res.name}' for ${res.user}, scope ${res.scope}, expires ${res.expiresAt ?? 'never'}\n`);
      }),
    );
  addClientOptions(
    token
      .command('list')
      .description('list tokens: id, name, user, scope, created, expires, last used')
      .addHelpText('after', examples('git-replication token list', 'git-replication token list --user alice --json')),
  )
    .option('--user <user>', "another user's tokens (cluster admin only; default: yours)", parseUserArg)
    .option('--json', 'print the JSON answer')
    .action(async (o: Options & { user?: string }) =>
      withApi(o, async (api) => {
        const res = await api.get<{ tokens: TokenView[] }>(o.user !== undefined ? `/tokens?user=${encodeURIComponent(o.user)}` : '/tokens');
        printAnswer(o, res, () => res.tokens.map(tokenLine).join(''));
      }),
    );
  addClientOptions(
    token
      .command('revoke')
      .description('revoke a token by id: it fails on every node within a second')
      .addHelpText('after', examples('git-replication token revoke 3f2a9c0d41b7e865'))
      .argument('<id>'),
  )
    .option('--json', 'print the JSON answer')
    .action(async (id: string, o: Options) =>
      withApi(o, async (api) => {
        const res = await api.delete<{ revoked: string; name: string; user: string }>(`/tokens/${encodeURIComponent(id)}`);
        printAnswer(o, res, () => `token ${res.revoked} ('${res.name}' of ${res.user}) revoked\n`);
      }),
    );
}
