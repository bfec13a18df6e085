import { describe, expect, it } from 'vitest';
import { canCreateIn, decide, lower, repoRole, type OrgRole, type Principal, type RepoPolicy, type Role } from './policy.js';

const user = (name: string, orgs: Record<string, OrgRole> = {}, admin = false): Principal => ({
  user: name,
  admin,
  orgs: new Map(Object.entries(orgs)),
});
const repo = (owner: string, visibility: 'public' | 'private', grants: Record<string, Role> = {}): RepoPolicy => ({
  owner,
  visibility,
  grants: new Map(Object.entries(grants)),
});

describe('repoRole', () => {
  const priv = repo('acme', 'private', { 'user:bob': 'write', 'org:friends': 'read' });
  const pub = repo('acme', 'public', { 'user:carol': 'admin' });
  it.each<[string, Principal | null, RepoPolicy, Role | null]>([
    ['anonymous, private', null, priv, null],
    ['anonymous, public', null, pub, 'read'],
    ['cluster admin', user('root', {}, true), priv, 'admin'],
    ['the namespace user', user('acme'), priv, 'admin'],
    ['an owner of the owning org', user('dora', { acme: 'owner' }), priv, 'admin'],
    ['a member of the owning org', user('erin', { acme: 'member' }), priv, 'read'],
    ['a member of the owning org with a write grant', user('bob', { acme: 'member' }), priv, 'write'],
    ['a user grant', user('bob'), priv, 'write'],
    ["a grant to one of the user's orgs", user('fred', { friends: 'member' }), priv, 'read'],
    ['a stranger, private', user('mallory'), priv, null],
    ['a stranger, public', user('mallory'), pub, 'read'],
    ['a grant above public read', user('carol'), pub, 'admin'],
    ['a member of another org', user('gina', { other: 'owner' }), priv, null],
  ])('%s', (_n, p, r, expected) => {
    expect(repoRole(p, r)).toBe(expected);
  });
});

describe('decide', () => {
  it.each<[Role | null, Role, boolean, string]>([
    ['read', 'read', false, 'allow'],
    [null, 'read', false, 'unauthenticated'],
    [null, 'read', true, 'not_found'],
    ['read', 'write', true, 'forbidden'],
    ['read', 'write', false, 'unauthenticated'],
    ['admin', 'write', true, 'allow'],
    [null, 'admin', true, 'not_found'],
  ])('role %s, need %s, signed in %s: %s', (role, need, authed, expected) => {
    expect(decide(role, need, authed)).toBe(expected);
  });
});

describe('lower and canCreateIn', () => {
  it('a token scope caps the role', () => {
    expect(lower('admin', 'read')).toBe('read');
    expect(lower(null, 'admin')).toBeNull();
  });
  it('creates under its own name or an organisation it belongs to', () => {
    expect(canCreateIn(user('alice'), 'alice')).toBe(true);
    expect(canCreateIn(user('alice', { acme: 'member' }), 'acme')).toBe(true);
    expect(canCreateIn(user('alice'), 'acme')).toBe(false);
    expect(canCreateIn(user('root', {}, true), 'anyone')).toBe(true);
  });
});
