import { execFileSync } from 'node:child_process';
import { createPublicKey, verify } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { utils } from 'ssh2';
import { describe, expect, it } from 'vitest';
import { SqliteStore } from '../store/sqlite/sqlite-store.js';
import { Directory } from './directory.js';
import { fingerprintOf, keyId, normalizeKeyId, parsePublicKey, SMALL_ORDER_ED25519, SshKeys } from './ssh-keys.js';

/** pair makes a key pair that parses: ssh2's generator now and then drops a leading zero byte. */
function pair(make: () => { public: string; private: string }): { public: string; private: string } {
  for (;;) {
    const k = make();
    if (!(utils.parseKey(k.public) instanceof Error) && !(utils.parseKey(k.private) instanceof Error)) return k;
  }
}

/** sshBlob is the base64 of SSH wire strings (a public key blob). */
function sshBlob(...parts: Array<string | Buffer>): string {
  return Buffer.concat(
    parts.map((p) => {
      const b = Buffer.isBuffer(p) ? p : Buffer.from(p);
      const len = Buffer.alloc(4);
      len.writeUInt32BE(b.length);
      return Buffer.concat([len, b]);
    }),
  ).toString('base64');
}

const ed = pair(() => utils.generateKeyPairSync('ed25519'));
const ecdsa = pair(() => utils.generateKeyPairSync('ecdsa', { bits: 256 }));
const rsa2048 = utils.generateKeyPairSync('rsa', { bits: 2048 });
const rsa1024 = utils.generateKeyPairSync('rsa', { bits: 1024 });

describe('parsePublicKey', () => {
  it.each([
    ['ed25519', `${ed.public} me@laptop`, 'ssh-ed25519'],
    ['ECDSA', ecdsa.public, 'ecdsa-sha2-nistp256'],
    ['RSA 2048', rsa2048.public, 'ssh-rsa'],
  ])('accepts %s', (_n, text, type) => {
    expect(parsePublicKey(text).type).toBe(type);
  });

  it.each([
    ['RSA 1024', rsa1024.public, /RSA key of 1024 bits is too short/],
    ['a private key', ed.private, /private key/],
    ['garbage', 'ssh-ed25519 AAAAnotakey', /not an SSH public key/],
    ['an empty string', '', /not an SSH public key/],
    // An RSA key whose modulus is empty: ssh2's parser throws (it was a 500), not returns an Error.
    ['a malformed RSA key', 'ssh-rsa AAAAB3NzaC1yc2EAAAAAAAAAAA==', /not an SSH public key/],
    [
      'an ECDSA key off its curve',
      `ecdsa-sha2-nistp256 ${sshBlob('ecdsa-sha2-nistp256', 'nistp256', Buffer.from([4, 1, 2, 3]))}`,
      /not a valid/,
    ],
  ])('refuses %s', (_n, text, why) => {
    expect(() => parsePublicKey(text)).toThrow(why);
  });

  it('refuses the ed25519 keys of small order, with either sign bit: a signature no secret made verifies for them', () => {
    // libsodium's blocklist: the points of order 1, 2, 4 and 8, canonical or not (7 encodings).
    expect(SMALL_ORDER_ED25519).toHaveLength(7);
    // R = the identity, S = 0: made from nothing.
    const forged = Buffer.concat([Buffer.from([1]), Buffer.alloc(63)]);
    for (const hex of SMALL_ORDER_ED25519)
      for (const sign of [0, 0x80]) {
        const raw = Buffer.from(hex, 'hex');
        raw[31] = raw[31]! | sign;
        const key = createPublicKey({
          key: Buffer.concat([Buffer.from('302a300506032b6570032100', 'hex'), raw]),
          format: 'der',
          type: 'spki',
        });
        // Why: node's own verify takes the forged signature for some of 64 messages (all, for the identity).
        const taken = Array.from({ length: 64 }, (_, i) => verify(null, Buffer.from(`message ${i}`), key, forged)).filter(Boolean).length;
        expect(taken, hex).toBeGreaterThan(0);
        expect(() => parsePublicKey(`ssh-ed25519 ${sshBlob('ssh-ed25519', raw)}`), hex).toThrow(/small order/);
      }
    // A real key's last byte may be anything: it is not refused for it.
    expect(parsePublicKey(ed.public).type).toBe('ssh-ed25519');
  });

  it('has the fingerprint ssh-keygen -l prints, and takes it back in either form', () => {
    const dir = mkdtempSync(join(tmpdir(), 'sshkey-'));
    writeFileSync(join(dir, 'k.pub'), `${ed.public}\n`);
    const printed = execFileSync('ssh-keygen', ['-l', '-f', join(dir, 'k.pub')], { encoding: 'utf8' }).split(' ')[1];
    const { id } = parsePublicKey(ed.public);
    expect(fingerprintOf(id)).toBe(printed);
    expect(normalizeKeyId(printed ?? '')).toBe(id);
    expect(normalizeKeyId(id)).toBe(id);
  });
});

describe('SshKeys', () => {
  it('a small-order ed25519 key registered before they were refused signs no one in', async () => {
    const store = new SqliteStore(':memory:');
    const directory = new Directory(store);
    await directory.addUser('alice', false);
    const keys = new SshKeys(store, directory);
    const blob = Buffer.from(sshBlob('ssh-ed25519', Buffer.concat([Buffer.from([1]), Buffer.alloc(31)])), 'base64');
    const record = { user: 'alice', name: 'old', type: 'ssh-ed25519', key: `ssh-ed25519 ${blob.toString('base64')}`, createdAt: '' };
    await store.setMeta(`ssh-keys/${keyId(blob)}`, JSON.stringify(record));
    expect((await keys.list('alice')).map((k) => k.name)).toEqual(['old']);
    expect(await keys.owner(blob)).toBeNull();
    await store.close();
  });

  it('an expiring key signs in until its time and not after; a past time is a 400', async () => {
    const store = new SqliteStore(':memory:');
    const directory = new Directory(store);
    await directory.addUser('alice', false);
    const keys = new SshKeys(store, directory);
    const blob = (text: string): Buffer => parsePublicKey(text).parsed.getPublicSSH();
    await expect(keys.add('alice', 'old', ed.public, new Date(Date.now() - 1_000).toISOString())).rejects.toThrow(/in the future/);
    await expect(keys.add('alice', 'bad', ed.public, 'not a time')).rejects.toThrow(/in the future/);
    const made = await keys.add('alice', 'short', ed.public, new Date(Date.now() + 300).toISOString());
    expect(made.expiresAt).toBeDefined();
    expect((await keys.owner(blob(ed.public)))?.user).toBe('alice');
    await keys.add('alice', 'forever', ecdsa.public);
    await new Promise((r) => setTimeout(r, 400));
    // The cache holds the record, not the verdict: the expiry is checked at every look-up.
    expect(await keys.owner(blob(ed.public))).toBeNull();
    expect((await keys.owner(blob(ecdsa.public)))?.keyName).toBe('forever');
    const listed = (await keys.list('alice')).map((k) => [k.name, k.expiresAt === undefined]);
    expect(listed.sort()).toEqual([
      ['forever', true],
      ['short', false],
    ]);
    // The expired registration does not keep the key from being added again (a live one does).
    await directory.addUser('bob', false);
    await expect(keys.add('bob', 'taken', ecdsa.public)).rejects.toThrow(/registered to another user/);
    expect((await keys.add('bob', 'again', ed.public)).user).toBe('bob');
    expect((await keys.owner(blob(ed.public)))?.user).toBe('bob');
    await store.close();
  });

  it('holds at most its limit of unexpired keys per user (expired ones do not count), and sweeps the long expired', async () => {
    const store = new SqliteStore(':memory:');
    const directory = new Directory(store);
    await directory.addUser('alice', false);
    await directory.addUser('bob', false);
    const keys = new SshKeys(store, directory, 2);
    await keys.add('alice', 'short', ed.public, new Date(Date.now() + 200).toISOString());
    await keys.add('alice', 'a', ecdsa.public);
    await expect(keys.add('alice', 'b', rsa2048.public)).rejects.toThrow(/holds 2 SSH keys, the most one user may/);
    // Another user's share is their own.
    expect((await keys.add('bob', 'b', rsa2048.public)).user).toBe('bob');
    await new Promise((r) => setTimeout(r, 300));
    // The expired key no longer counts; nor is it swept before its time ...
    expect(await keys.sweepExpired(Date.now() - 60_000)).toBe(0);
    expect((await keys.list('alice')).map((k) => k.name).sort()).toEqual(['a', 'short']);
    // ... and after it, only it goes.
    expect(await keys.sweepExpired(Date.now())).toBe(1);
    expect((await keys.list('alice')).map((k) => k.name)).toEqual(['a']);
    expect((await keys.list('bob')).map((k) => k.name)).toEqual(['b']);
    await store.close();
  });
});
