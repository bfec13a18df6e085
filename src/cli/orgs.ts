import { Argument, Option, type Command } from 'commander';
import { commandGroup, ORG_ROLES, parseOrgArg, parseUserArg, printAnswer, type JsonOption } from './args.js';
import { addClientOptions, withApi, type ClientOptions } from './http-client.js';
import { examples } from './help.js';

interface Member {
  user: string;
  role: string;
}
type Options = ClientOptions & JsonOption;

function memberPath(org: string, user: string): string {
  return `/orgs/${encodeURIComponent(org)}/members/${encodeURIComponent(user)}`;
}

const orgArg = (): Argument => new Argument('<org>').argParser(parseOrgArg);
const userArg = (): Argument => new Argument('<user>').argParser(parseUserArg);

/** registerOrgs adds `org create|add-member|remove-member|delete|show`; an organisation's owners manage its members. */
export function registerOrgs(program: Command): void {
  const org = commandGroup(program, 'org', 'organisations and their members').addHelpText(
    'after',
    examples('git-replication org create acme', 'git-replication org add-member acme bob --role owner', 'git-replication org show acme'),
  );
  addClientOptions(
    org
      .command('create')
      .description('create an organisation; you become its owner')
      .addHelpText(
        'after',
        examples('git-replication org create acme', 'git-replication org create acme --token-file ~/.config/git-replication/token'),
      )
      .addArgument(orgArg()),
  )
    .option('--json', 'print the JSON answer')
    .action(async (name: string, o: Options) =>
      withApi(o, async (api) => {
        const res = await api.post<{ name: string; owner: string }>('/orgs', { name });
        printAnswer(o, res, () => `organisation ${res.name} created, owner ${res.owner}\n`);
      }),
    );
  addClientOptions(
    org
      .command('add-member')
      .description('add a user to an organisation, or change its role')
      .addHelpText('after', examples('git-replication org add-member acme bob', 'git-replication org add-member acme bob --role owner'))
      .addArgument(orgArg())
      .addArgument(userArg()),
  )
    .addOption(new Option('--role <role>', 'role in the organisation').choices(ORG_ROLES).default('member'))
    .option('--json', 'print the JSON answer')
    .action(async (name: string, user: string, o: Options & { role: string }) =>
      withApi(o, async (api) => {
        const res = await api.put<Member & { org: string }>(memberPath(name, user), { role: o.role });
        printAnswer(o, res, () => `${res.user} is ${res.role === 'owner' ? 'an owner' : 'a member'} of ${res.org}\n`);
      }),
    );
  addClientOptions(
    org
      .command('remove-member')
      .description('take a user out of an organisation')
      .addHelpText('after', examples('git-replication org remove-member acme bob'))
      .addArgument(orgArg())
      .addArgument(userArg()),
  )
    .option('--json', 'print the JSON answer')
    .action(async (name: string, user: string, o: Options) =>
      withApi(o, async (api) => {
        const res = await api.delete<{ org: string; user: string }>(memberPath(name, user));
        printAnswer(o, res, () => `${res.user} removed from ${res.org}\n`);
      }),
    );
  addClientOptions(
    org
      .command('delete')
      .description('delete an organisation that holds no repository (an owner, with an admin-scoped token)')
      .addHelpText('after', examples('git-replication org delete acme'))
      .addArgument(orgArg()),
  )
    .option('--json', 'print the JSON answer')
    .action(async (name: string, o: Options) =>
      withApi(o, async (api) => {
        const res = await api.delete<{ name: string }>(`/orgs/${encodeURIComponent(name)}`);
        printAnswer(o, res, () => `organisation ${res.name} deleted\n`);
      }),
    );
  addClientOptions(
    org
      .command('show')
      .description("list an organisation's members and roles")
      .addHelpText('after', examples('git-replication org show acme', 'git-replication org show acme --json'))
      .addArgument(orgArg()),
  )
    .option('--json', 'print the JSON answer')
    .action(async (name: string, o: Options) =>
      withApi(o, async (api) => {
        const res = await api.get<{ name: string; members: Member[] }>(`/orgs/${encodeURIComponent(name)}`);
        printAnswer(o, res, () => `organisation ${res.name}\n${res.members.map((m) => `  ${m.user}\t${m.role}\n`).join('')}`);
      }),
    );
}
