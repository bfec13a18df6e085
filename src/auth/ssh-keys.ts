import { createHash, createPublicKey } from 'node:crypto';
import ssh2 from 'ssh2';
import { type ParsedKey } from 'ssh2';
import { badRequest, conflict, notFound } from '../domain/errors.js';
import type { ClusterStore } from '../store/types.js';
import { DIRECTORY_CACHE_MS, type Directory } from './directory.js';
import { isExpired } from './tokens.js';

// ssh2 is CommonJS: its named exports are read from the default export.
const { utils } = ssh2;

/** SshKeyRecord is what the store keeps of a registered public key (`ssh-keys/<id>`). */
export interface SshKeyRecord {
  readonly user: string;
  readonly name: string;
  readonly type: string;
  /** key is the public key line, `<type> <base64>` (no comment). */
  readonly key: string;
  readonly createdAt: string;
  /** expiresAt: ISO time after which the key signs in no more; absent: never. */
  readonly expiresAt?: string;
}

/** SshKeyView is what listing shows of a key. */
export interface SshKeyView extends SshKeyRecord {
  /** id is the fingerprint in URL-safe form, used to remove the key. */
  readonly id: string;
  /** fingerprint is OpenSSH's form, `SHA256:<base64>`, as `ssh-keygen -l` prints it. */
  readonly fingerprint: string;
}

/** MIN_RSA_BITS is the smallest RSA modulus accepted (NIST SP 800-131A; OpenSSH 9 refuses < 1024). */
export const MIN_RSA_BITS = 2048;
const ACCEPTED = new Set(['ssh-ed25519', 'ecdsa-sha2-nistp256', 'ecdsa-sha2-nistp384', 'ecdsa-sha2-nistp521', 'ssh-rsa']);
const PREFIX = 'ssh-keys/';
const MAX_KEY_TEXT = 16 * 1024;

/** keyId is a public key blob's SHA-256 in base64url without padding: its store id. */
export function keyId(blob: Buffer): string {
  return createHash('sha256').update(blob).digest('base64url');
}

/** fingerprintOf turns a key id into OpenSSH's `SHA256:` form. */
export function fingerprintOf(id: string): string {
  return `SHA256:${id.replace(/-/g, '+').replace(/_/g, '/')}`;
}

/** normalizeKeyId accepts an id or an OpenSSH fingerprint (`SHA256:…`) and returns the id. */
export function normalizeKeyId(value: string): string {
  return value
    .replace(/^SHA256:/, '')
    .replace(/\+/g, '-')
    .replace(/\//g, '_')
    .replace(/=+$/, '');
}

/**
 * SMALL_ORDER_ED25519 are the encodings of the ed25519 points of order 1, 2, 4 and 8 (libsodium's
 * blocklist; the sign bit, the top bit of the last byte, is not compared). For such a key a
 * signature of R = the identity and S = 0 verifies for a message in 1 of 1 to 8 tries, made
 * without any secret: anyone could sign in as the user who registered it.
 */
export const SMALL_ORDER_ED25519: readonly string[] = [
  '0000000000000000000000000000000000000000000000000000000000000000',
  '0100000000000000000000000000000000000000000000000000000000000000',
  '26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05',
  'c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a',
  'ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f',
  'edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f',
  'eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f',
];

/** smallOrder says whether a key is an ed25519 key of SMALL_ORDER_ED25519, whatever its sign bit. */
function smallOrder(parsed: ParsedKey): boolean {
  if (parsed.type !== 'ssh-ed25519') return false;
  // The wire form ends with the key's 32 bytes.
  const raw = Buffer.from(parsed.getPublicSSH().subarray(-32));
  raw[31] = raw[31]! & 0x7f;
  return SMALL_ORDER_ED25519.includes(raw.toString('hex'));
}

/**
 * parseKeyText is ssh2's parseKey, which returns an Error for most bad input but throws for some
 * (an RSA key with an empty modulus: an assertion in its ASN.1 writer, which was a 500).
 */
function parseKeyText(text: string): ParsedKey | Error {
  try {
    const parsed = utils.parseKey(text);
    return Array.isArray(parsed) ? new Error('more than one key') : parsed;
  } catch (err) {
    return new Error(err instanceof Error && err.name !== 'AssertionError' ? err.message : 'malformed key');
  }
}

/**
 * parsePublicKey checks a public key line (`ssh-ed25519 AAAA… comment`): ed25519, ECDSA, or RSA
 * of at least MIN_RSA_BITS; a private key, DSA, or anything unparsable is a 400.
 */
export function parsePublicKey(text: string): { parsed: ParsedKey; type: string; line: string; id: string } {
  if (text.length > MAX_KEY_TEXT) throw badRequest('public key is too long');
  const parsed = parseKeyText(text.trim());
  if (parsed instanceof Error) throw badRequest(`not an SSH public key: ${parsed.message}`);
  if (parsed.isPrivateKey()) throw badRequest('that is a private key: register the public key (the .pub file)');
  if (!ACCEPTED.has(parsed.type))
    throw badRequest(`key type ${parsed.type} is not accepted: use ed25519, ECDSA or RSA (>= ${MIN_RSA_BITS} bits)`);
  // The key's numbers must make a key (an RSA modulus, a point on the curve): ssh2 parses the
  // wire form only, and threw from its ASN.1 writer on a malformed RSA key (a 500).
  let details: ReturnType<typeof createPublicKey>['asymmetricKeyDetails'];
  try {
    details = createPublicKey(parsed.getPublicPEM()).asymmetricKeyDetails;
  } catch {
    throw badRequest(`not a valid ${parsed.type} public key`);
  }
  if (parsed.type === 'ssh-rsa') {
    const bits = details?.modulusLength ?? 0;
    if (bits < MIN_RSA_BITS) throw badRequest(`RSA key of ${bits} bits is too short: at least ${MIN_RSA_BITS} bits`);
    if ((details?.publicExponent ?? 0n) > 0xffffffffn) throw badRequest('RSA public exponent is too large');
  }
  const blob = parsed.getPublicSSH();
  if (smallOrder(parsed))
    throw badRequest('not a valid ssh-ed25519 public key: a point of small order, for which anyone can make a signature');
  return { parsed, type: parsed.type, line: `${parsed.type} ${blob.toString('base64')}`, id: keyId(blob) };
}

/** DEFAULT_MAX_SSH_KEYS_PER_USER is the unexpired SSH keys one user may hold (settings: maxSshKeysPerUser). */
export const DEFAULT_MAX_SSH_KEYS_PER_USER = 100;

/** SshPrincipal is who a presented key belongs to, and the key's name. */
export interface SshKeyOwner {
  readonly user: string;
  readonly keyName: string;
  readonly parsed: ParsedKey;
}

/**
 * SshKeys keeps users' SSH public keys in the cluster store under `ssh-keys/<id>`, the id being
 * the key's SHA-256: a key belongs to one user (adding one another user holds is a 409). Look-ups
 * at sign-in are cached for DIRECTORY_CACHE_MS, like tokens: a removed key fails on every node
 * within that time.
 */
export class SshKeys {
  private readonly cache = new Map<string, { at: number; record: SshKeyRecord | null }>();

  constructor(
    private readonly store: ClusterStore,
    private readonly directory: Directory,
    /** maxPerUser: the unexpired keys one user may hold (add refuses past it, 409). */
    private readonly maxPerUser = DEFAULT_MAX_SSH_KEYS_PER_USER,
  ) {}

  /**
   * add registers a key for a user (404 for an unknown user, 409 if the key is registered),
   * expiring at `expiresAt` if given (a 400 unless it is in the future).
   */
  async add(user: string, name: string, text: string, expiresAt?: string): Promise<SshKeyView> {
    if (expiresAt !== undefined && !(Date.parse(expiresAt) > Date.now())) throw badRequest('expires_at must be a time in the future');
    if (!(await this.directory.user(user))) throw notFound(`user ${user} not found`);
    const k = parsePublicKey(text);
    const held = (await this.store.listMeta(PREFIX)).filter((m) => {
      const r = JSON.parse(m.value) as SshKeyRecord;
      return r.user === user && !isExpired(r);
    }).length;
    if (held >= this.maxPerUser)
      throw conflict(`user ${user} holds ${held} SSH keys, the most one user may (MAX_SSH_KEYS_PER_USER): remove some first`);
    const record: SshKeyRecord = {
      user,
      name,
      type: k.type,
      key: k.line,
      createdAt: new Date().toISOString(),
      ...(expiresAt !== undefined ? { expiresAt: new Date(expiresAt).toISOString() } : {}),
    };
    const key = `${PREFIX}${k.id}`;
    let stored = await this.store.setMetaIfAbsent(key, JSON.stringify(record));
    // An expired registration of the key is replaced (else the key could not be added again,
    // by its user or anyone, until someone removed the dead one); read again just before, so a
    // registration made meanwhile is not the one removed.
    if (stored !== JSON.stringify(record) && isExpired(JSON.parse(stored) as SshKeyRecord) && (await this.store.getMeta(key)) === stored) {
      await this.store.deleteMeta(key);
      stored = await this.store.setMetaIfAbsent(key, JSON.stringify(record));
    }
    if (stored !== JSON.stringify(record)) {
      const holder = JSON.parse(stored) as SshKeyRecord;
      throw conflict(
        holder.user === user ? `this key is registered already (as '${holder.name}')` : 'this key is registered to another user',
      );
    }
    this.cache.delete(k.id);
    return { ...record, id: k.id, fingerprint: fingerprintOf(k.id) };
  }

  /** sweepExpired deletes the keys that expired before `before` and returns how many went (as Authenticator.sweepExpired). */
  async sweepExpired(before: number): Promise<number> {
    let removed = 0;
    for (const m of await this.store.listMeta(PREFIX)) {
      const record = JSON.parse(m.value) as SshKeyRecord;
      if (!isExpired(record, before)) continue;
      // Deleted only if it is still that record: a key added again meanwhile stays.
      if ((await this.store.getMeta(m.key)) !== m.value) continue;
      await this.store.deleteMeta(m.key);
      this.cache.delete(m.key.slice(PREFIX.length));
      removed++;
    }
    return removed;
  }

  /** list shows a user's keys. */
  async list(user: string): Promise<SshKeyView[]> {
    const out: SshKeyView[] = [];
    for (const m of await this.store.listMeta(PREFIX)) {
      const record = JSON.parse(m.value) as SshKeyRecord;
      const id = m.key.slice(PREFIX.length);
      if (record.user === user) out.push({ ...record, id, fingerprint: fingerprintOf(id) });
    }
    return out.sort((a, b) => a.createdAt.localeCompare(b.createdAt));
  }

  /** remove deletes one of a user's keys by id or fingerprint (404 if the user has no such key). */
  async remove(user: string, idOrFingerprint: string): Promise<SshKeyView> {
    const id = normalizeKeyId(idOrFingerprint);
    const raw = /^[A-Za-z0-9_-]{43}$/.test(id) ? await this.store.getMeta(`${PREFIX}${id}`) : null;
    const record = raw ? (JSON.parse(raw) as SshKeyRecord) : null;
    if (!record || record.user !== user) throw notFound(`user ${user} has no key ${idOrFingerprint}`);
    await this.store.deleteMeta(`${PREFIX}${id}`);
    this.cache.delete(id);
    return { ...record, id, fingerprint: fingerprintOf(id) };
  }

  /**
   * owner finds who a presented public key blob belongs to: null for an unknown or expired key,
   * or a disabled (or deleted) user.
   */
  async owner(blob: Buffer): Promise<SshKeyOwner | null> {
    const id = keyId(blob);
    const hit = this.cache.get(id);
    let record: SshKeyRecord | null;
    if (hit && Date.now() - hit.at < DIRECTORY_CACHE_MS) record = hit.record;
    else {
      const raw = await this.store.getMeta(`${PREFIX}${id}`);
      record = raw ? (JSON.parse(raw) as SshKeyRecord) : null;
      this.cache.set(id, { at: Date.now(), record });
      if (this.cache.size > 4_096) this.cache.clear();
    }
    if (!record || isExpired(record)) return null;
    const user = await this.directory.user(record.user);
    if (!user || user.disabled) return null;
    const parsed = parseKeyText(record.key);
    // One registered before such keys were refused signs no one in.
    if (parsed instanceof Error || smallOrder(parsed)) return null;
    return { user: record.user, keyName: record.name, parsed };
  }
}
