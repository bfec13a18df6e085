import { describe, expect, it } from 'vitest';
import { gitProtocolValue, parseGitCommand, parseLfsAuthenticate } from './command.js';
import { hostPublicKey, newHostKey } from './server.js';

describe('parseGitCommand', () => {
  it.each([
    ["git-upload-pack '/acme/site.git'", 'git-upload-pack', 'acme/site'],
    ["git-upload-pack 'acme/site.git'", 'git-upload-pack', 'acme/site'],
    ["git-receive-pack '/acme/site.git'", 'git-receive-pack', 'acme/site'],
    ['git-receive-pack acme/site', 'git-receive-pack', 'acme/site'],
    ["git upload-pack '/acme/site'", 'git-upload-pack', 'acme/site'],
    ["git-upload-pack '~/acme/site.git'", 'git-upload-pack', 'acme/site'],
  ])('accepts %s', (cmd, service, repo) => {
    expect(parseGitCommand(cmd)).toMatchObject({ service, repoId: repo, write: service === 'git-receive-pack' });
  });

  it.each([
    ['ls /', /only git-upload-pack, git-receive-pack and git-lfs-authenticate/],
    ['', /only git-upload-pack/],
    ["git-upload-archive '/acme/site.git'", /only git-upload-pack/],
    ["git-upload-pack '/acme/site.git'; rm -rf /", /only git-upload-pack/],
    ["git-upload-pack '/acme/site.git' --upload-pack=touch", /only git-upload-pack/],
    ["git-upload-pack '/../../etc.git'", /not a repository path/],
    ["git-upload-pack '/acme/../x.git'", /not a repository path/],
    ["git-upload-pack '/etc/passwd/x'", /not a repository path/],
    ["git-upload-pack '/x'", /not a repository path/],
    ["git-upload-pack '/admin/x.git'", /not a repository path/],
    ["git-upload-pack '--help/x'", /not a repository path/],
    ['git-upload-pack $(id)/x', /not a repository path/],
  ])('refuses %s', (cmd, why) => {
    expect(() => parseGitCommand(cmd)).toThrow(why);
  });
});

describe('parseLfsAuthenticate', () => {
  it('reads what git-lfs sends, and is null for other commands', () => {
    expect(parseLfsAuthenticate("git-lfs-authenticate 'acme/site.git' upload")).toEqual({ repoId: 'acme/site', operation: 'upload' });
    expect(parseLfsAuthenticate('git-lfs-authenticate /acme/site.git download')).toEqual({ repoId: 'acme/site', operation: 'download' });
    expect(parseLfsAuthenticate("git-upload-pack 'acme/site.git'")).toBeNull();
  });

  it.each([
    ['git-lfs-authenticate acme/site.git delete', /use: git-lfs-authenticate/],
    ['git-lfs-authenticate', /use: git-lfs-authenticate/],
    ['git-lfs-authenticate ../../etc.git upload', /not a repository path/],
    ['git-lfs-authenticate acme/site.git upload; id', /use: git-lfs-authenticate/],
    ["git-lfs-authenticate 'admin/x.git' upload", /not a repository path/],
  ])('refuses %s', (cmd, why) => {
    expect(() => parseLfsAuthenticate(cmd)).toThrow(why);
  });
});

describe('gitProtocolValue', () => {
  it('accepts version=2 and refuses anything odd', () => {
    expect(gitProtocolValue('version=2')).toBe('version=2');
    expect(gitProtocolValue('version=2\nx')).toBeNull();
    expect(gitProtocolValue('')).toBeNull();
  });
});

describe('newHostKey', () => {
  it('always makes a key that parses (ssh2 sometimes writes one that does not)', () => {
    for (let i = 0; i < 1000; i++) expect(hostPublicKey(newHostKey()).line).toMatch(/^ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI/);
  });
});
