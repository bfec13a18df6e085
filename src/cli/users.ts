import { Argument, type Command } from 'commander';
import { commandGroup, parseNewUserArg, parseUserArg, printAnswer, type JsonOption } from './args.js';
import { addClientOptions, withApi, type ClientOptions } from './http-client.js';
import { examples } from './help.js';

interface User {
  name: string;
  admin: boolean;
  disabled: boolean;
  createdAt: string;
}
type Options = ClientOptions & JsonOption;

function userLine(u: User): string {
  return `${u.name}\t${u.admin ? 'admin' : 'user'}\t${u.disabled ? 'disabled' : 'enabled'}\t${u.createdAt}\n`;
}

/** registerUsers adds `user add|list|disable|enable`, which a cluster admin runs. */
export function registerUsers(program: Command): void {
  const user = commandGroup(program, 'user', 'user accounts (cluster admin)').addHelpText(
    'after',
    examples('git-replication user add alice', 'git-replication user list --json', 'git-replication user disable alice'),
  );
  addClientOptions(
    user
      .command('add')
      .description('create a user')
      .addHelpText('after', examples('git-replication user add alice', 'git-replication user add ops --admin --url http://10.0.0.2:3000'))
      .addArgument(new Argument('<name>').argParser(parseNewUserArg)),
  )
    .option('--admin', 'make the user a cluster admin')
    .option('--json', 'print the JSON answer')
    .action(async (name: string, o: Options & { admin?: boolean }) =>
      withApi(o, async (api) => {
        const made = await api.post<User>('/users', { name, admin: o.admin === true });
        printAnswer(o, made, () => `user ${made.name} added${made.admin ? ' (cluster admin)' : ''}\n`);
      }),
    );
  addClientOptions(
    user
      .command('list')
      .description('list users: name, admin or user, enabled or disabled, created')
      .addHelpText('after', examples('git-replication user list', "git-replication user list --json | jq -r '.users[].name'")),
  )
    .option('--json', 'print the JSON answer')
    .action(async (o: Options) =>
      withApi(o, async (api) => {
        const res = await api.get<{ users: User[] }>('/users');
        printAnswer(o, res, () => res.users.map(userLine).join(''));
      }),
    );
  for (const [verb, effect] of [
    ['disable', 'its tokens stop working on every node'],
    ['enable', 'its tokens work again'],
  ] as const) {
    addClientOptions(
      user
        .command(verb)
        .description(`${verb} a user: ${effect}`)
        .addHelpText('after', examples(`git-replication user ${verb} alice`))
        .addArgument(new Argument('<name>').argParser(parseUserArg)),
    )
      .option('--json', 'print the JSON answer')
      .action(async (name: string, o: Options) =>
        withApi(o, async (api) => {
          const res = await api.post<User>(`/users/${encodeURIComponent(name)}/${verb}`);
          printAnswer(o, res, () => `user ${res.name} ${res.disabled ? 'disabled' : 'enabled'}\n`);
        }),
      );
  }
}
