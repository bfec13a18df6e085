import { readFile } from 'node:fs/promises';
import { basename } from 'node:path';
import { Argument, type Command } from 'commander';
import { normalizeKeyId } from '../auth/ssh-keys.js';
import { errorMessage } from '../domain/errors.js';
import { commandGroup, parseExpiresArg, parseUserArg, printAnswer, validated, type JsonOption } from './args.js';
import { addClientOptions, CliError, withApi, type ClientOptions } from './http-client.js';
import { examples } from './help.js';

interface KeyView {
  id: string;
  fingerprint: string;
  user: string;
  name: string;
  type: string;
  createdAt: string;
  expiresAt?: string;
}
type Options = ClientOptions & JsonOption;

/** parseKeyName checks a key's name by the server's schema (1-100 of A-Z a-z 0-9 . _ @ -). */
const parseKeyName = validated((v) => {
  if (!/^[A-Za-z0-9._@-]{1,100}$/.test(v)) throw new Error('a key name is 1-100 characters of A-Z a-z 0-9 . _ @ -');
  return v;
});

/** defaultKeyName is the key's comment when it is a usable name, else the file's name without `.pub`. */
function defaultKeyName(line: string, file: string): string {
  const comment = line.trim().split(/\s+/)[2] ?? '';
  const candidate = /^[A-Za-z0-9._@-]{1,100}$/.test(comment) ? comment : basename(file).replace(/\.pub$/, '');
  return /^[A-Za-z0-9._@-]{1,100}$/.test(candidate) ? candidate : 'key';
}

function keyLine(k: KeyView): string {
  return `${k.fingerprint}\t${k.name}\t${k.type}\t${k.user}\tcreated ${k.createdAt}\texpires ${k.expiresAt ?? 'never'}\n`;
}

/** registerKeys adds `key add|list|remove`: users' SSH public keys (a user's own, or anyone's for a cluster admin). */
export function registerKeys(program: Command): void {
  const key = commandGroup(program, 'key', 'SSH public keys for git over SSH').addHelpText(
    'after',
    examples('git-replication key add alice ~/.ssh/id_ed25519.pub', 'git-replication key list alice'),
  );
  addClientOptions(
    key
      .command('add')
      .description('register an SSH public key (ed25519, ECDSA, RSA >= 2048 bits) for a user')
      .addHelpText(
        'after',
        examples(
          'git-replication key add alice ~/.ssh/id_ed25519.pub',
          'git-replication key add alice laptop.pub --name laptop',
          'git-replication key add alice contractor.pub --expires 30d',
        ),
      )
      .addArgument(new Argument('<user>').argParser(parseUserArg))
      .argument('<file>', 'the public key file, e.g. ~/.ssh/id_ed25519.pub'),
  )
    .option('--name <name>', 'a name for the key (default: its comment, else the file name)', parseKeyName)
    .option(
      '--expires <when>',
      'a duration (30d, 12h, 90m, 2w) or an ISO time; default: never (a token that expires adds keys that expire by then)',
      parseExpiresArg,
    )
    .option('--json', 'print the JSON answer')
    .action(async (user: string, file: string, o: Options & { name?: string; expires?: string }) =>
      withApi(o, async (api) => {
        let text: string;
        try {
          text = await readFile(file, 'utf8');
        } catch (err) {
          throw new CliError(`cannot read ${file}: ${errorMessage(err)}`, null, { cause: err });
        }
        const res = await api.post<KeyView>(`/users/${encodeURIComponent(user)}/keys`, {
          name: o.name ?? defaultKeyName(text, file),
          key: text.trim(),
          ...(o.expires !== undefined ? { expires_at: o.expires } : {}),
        });
        printAnswer(
          o,
          res,
          () =>
            `key ${res.fingerprint} '${res.name}' (${res.type}) added for ${res.user}${res.expiresAt ? `, expires ${res.expiresAt}` : ''}\n`,
        );
      }),
    );
  addClientOptions(
    key
      .command('list')
      .description("list a user's SSH keys: fingerprint, name, type, user, created, expires")
      .addHelpText('after', examples('git-replication key list alice', 'git-replication key list alice --json'))
      .addArgument(new Argument('<user>').argParser(parseUserArg)),
  )
    .option('--json', 'print the JSON answer')
    .action(async (user: string, o: Options) =>
      withApi(o, async (api) => {
        const res = await api.get<{ keys: KeyView[] }>(`/users/${encodeURIComponent(user)}/keys`);
        printAnswer(o, res, () => res.keys.map(keyLine).join(''));
      }),
    );
  addClientOptions(
    key
      .command('remove')
      .description("remove one of a user's SSH keys by fingerprint (SHA256:…)")
      .addHelpText('after', examples('git-replication key remove alice SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s'))
      .addArgument(new Argument('<user>').argParser(parseUserArg))
      .argument('<fingerprint>'),
  )
    .option('--json', 'print the JSON answer')
    .action(async (user: string, fingerprint: string, o: Options) =>
      withApi(o, async (api) => {
        const res = await api.delete<{ removed: string; fingerprint: string; name: string; user: string }>(
          `/users/${encodeURIComponent(user)}/keys/${encodeURIComponent(normalizeKeyId(fingerprint))}`,
        );
        printAnswer(o, res, () => `key ${res.fingerprint} '${res.name}' of ${res.user} removed\n`);
      }),
    );
}
