import { Readable } from 'node:stream';
import { bodyDigest } from '../auth/peer-signature.js';
import { badRequest, unauthorized } from '../domain/errors.js';
import { isOid, refNameProblem, type RefUpdate } from '../domain/ref-name.js';
import { INCARNATION_ID, LFS_OID } from '../domain/lfs-ids.js';
import { parseRepoId, type RepoId } from '../domain/repo-id.js';
import { isFsckIgnoreList } from '../git/fsck-policy.js';
import type { TxnKind } from '../store/types.js';

/**
 * The replication protocol, in one place: its version (below), and its messages, each encoder
 * beside its decoder (further down): prepare (`prepareToWire` / `parsePrepare`), stage
 * (`stageToWire` / `parseStage`), commit and abort (`txnToWire` / `TXN_SCHEMA`), and the framing
 * of a body that carries a pack after its JSON (`frameHead` / `readFrame`). PeerClient sends
 * them; http/replicate-routes.ts receives them.
 *
 * The replication protocol's version: what peers must agree on to run a transaction together
 * (the prepare/commit/abort messages, their signatures, the hop tokens). Each node registers
 * the range it speaks; a caller uses the highest version both speak and names it in every peer
 * call; a receiver refuses (426) a version outside its range. A rolling upgrade that changes the
 * protocol ships a build that speaks old and new (`2-3`), rolls it out node by node, then drops
 * the old one.
 */

/** ProtocolRange is the versions a node speaks, both ends included. */
export interface ProtocolRange {
  readonly min: number;
  readonly max: number;
}

/**
 * PROTOCOL is what this build speaks. 2: peer signatures bound to the receiver and the body.
 * 3: a push's pack may be shipped ahead of its prepare (`/replicate/stage`, `staged_packs`),
 * and one transaction may carry the pushes of a group, each with its own pack. 4: a push's pack
 * may be copied to the peers while the client uploads it (`/replicate/stage-upload`). 5: Git LFS
 * objects are copied, listed and read between replicas (`/replicate/lfs/*`).
 */
export const PROTOCOL: ProtocolRange = { min: 2, max: 5 };

/** PROTOCOL_HEADER names the version of a peer call. */
export const PROTOCOL_HEADER = 'x-replication-protocol';

/**
 * protocolFromEnv reads GIT_REPLICATION_PROTOCOL (`3` or `2-3`): a test hook that makes this
 * build claim another range, to rehearse a rolling upgrade with one build. Unset: PROTOCOL.
 */
export function protocolFromEnv(value: string | undefined): ProtocolRange {
  if (value === undefined || value === '') return PROTOCOL;
  const m = /^(\d{1,4})(?:-(\d{1,4}))?$/.exec(value.trim());
  if (!m) throw new Error(`GIT_REPLICATION_PROTOCOL must be N or N-M, got '${value}'`);
  const min = Number(m[1]);
  const max = Number(m[2] ?? m[1]);
  if (max < min) throw new Error(`GIT_REPLICATION_PROTOCOL: ${max} < ${min}`);
  return { min, max };
}

/** common is the highest version two ranges share, or null. A peer that registered none speaks protocol 1. */
export function common(a: ProtocolRange, b: ProtocolRange | undefined): number | null {
  const other = b ?? { min: 1, max: 1 };
  const v = Math.min(a.max, other.max);
  return v >= Math.max(a.min, other.min) ? v : null;
}

/** formatRange renders a range for messages: `2` or `2-3`. */
export function formatRange(r: ProtocolRange | undefined): string {
  if (!r) return '1';
  return r.min === r.max ? String(r.min) : `${r.min}-${r.max}`;
}

// ---- Messages: each encoder beside its decoder ----

/** PrepareRequest is what a coordinator sends every replica of a transaction. */
export interface PrepareRequest {
  readonly txnId: string;
  readonly repoId: string;
  readonly kind: TxnKind;
  readonly coordinator: string;
  readonly incarnation: string;
  readonly baseGeneration: number;
  readonly fencingToken: number;
  readonly newChecksum: string;
  readonly updates: readonly RefUpdate[];
  /** newHead: HEAD points at this branch once the transaction commits. */
  readonly newHead?: string;
  /** fsckIgnore is the coordinator's fsck policy for the pack: the participant judges it alike. */
  readonly fsckIgnore?: readonly string[];
  /** packHash is the trailer hash of the shipped pack (its name); the participant checks index-pack's against it. */
  readonly packHash?: string;
  /** stagedPacks: the trailer hashes of packs shipped ahead by `stage` (a group of pushes brings one each). */
  readonly stagedPacks?: readonly string[];
  /**
   * replicaChecked: the coordinator read this participant's replica record under the repo lock,
   * in sync at baseGeneration and of this incarnation, so the participant does not read it
   * again (one store read less per replica and push). Without it the participant reads it.
   */
  readonly replicaChecked?: boolean;
}

/** STAGE_PROTOCOL is the first protocol version with `/replicate/stage` and `staged_packs`. */
export const STAGE_PROTOCOL = 3;

/** UPLOAD_STAGE_PROTOCOL is the first protocol version with `/replicate/stage-upload`. */
export const UPLOAD_STAGE_PROTOCOL = 4;

/** LFS_PROTOCOL is the first protocol version with `/replicate/lfs/*` (Git LFS objects between replicas). */
export const LFS_PROTOCOL = 5;

const LFS_OID_PATTERN = LFS_OID.source;
const LFS_REF_PROPERTIES = {
  repo_id: { type: 'string', maxLength: 512 },
  incarnation: { type: 'string', pattern: INCARNATION_ID.source },
} as const;

/** LFS_REF_SCHEMA is `/replicate/lfs/list`'s body: a repository's incarnation. */
export const LFS_REF_SCHEMA = {
  body: { type: 'object', required: ['repo_id', 'incarnation'], properties: LFS_REF_PROPERTIES },
} as const;

/** LFS_HAVE_SCHEMA is `/replicate/lfs/have`'s body: a repository's incarnation and up to 1,000 oids. */
export const LFS_HAVE_SCHEMA = {
  body: {
    type: 'object',
    required: ['repo_id', 'incarnation', 'oids'],
    properties: { ...LFS_REF_PROPERTIES, oids: { type: 'array', maxItems: 1_000, items: { type: 'string', pattern: LFS_OID_PATTERN } } },
  },
} as const;

/** LFS_OBJECT_SCHEMA is `/replicate/lfs/get`'s body: one object of a repository's incarnation. */
export const LFS_OBJECT_SCHEMA = {
  body: {
    type: 'object',
    required: ['repo_id', 'incarnation', 'oid'],
    properties: { ...LFS_REF_PROPERTIES, oid: { type: 'string', pattern: LFS_OID_PATTERN } },
  },
} as const;

/** parseLfsPut reads `/replicate/lfs/put`'s metadata: the object a replica copies here, and its size. */
export function parseLfsPut(body: unknown): { repoId: RepoId; incarnation: string; oid: string; size: number } {
  const b = (typeof body === 'object' && body !== null ? body : {}) as Record<string, unknown>;
  const { repo_id: repoId, incarnation, oid, size } = b;
  if (typeof repoId !== 'string' || typeof incarnation !== 'string' || !INCARNATION_ID.test(incarnation))
    throw badRequest('lfs put needs repo_id and incarnation');
  if (typeof oid !== 'string' || !LFS_OID.test(oid)) throw badRequest('lfs put needs an oid');
  if (!Number.isSafeInteger(size) || (size as number) < 0) throw badRequest('lfs put needs a size');
  return { repoId: parseRepoId(repoId), incarnation, oid, size: size as number };
}

/** PREPARE_CONTENT_TYPE frames a push prepare: `<json length>\n<json>` then the raw pack. */
export const PREPARE_CONTENT_TYPE = 'application/x-git-replication-prepare';

/** frameHead is the front of a framed body: `<json length>\n<json>`; readFrame reads it back. */
export function frameHead(json: Buffer): Buffer {
  return Buffer.concat([Buffer.from(`${json.length}\n`), json]);
}

/** prepareToWire encodes a PrepareRequest in the seed's snake_case field names (parsePrepare decodes it). */
export function prepareToWire(req: PrepareRequest): Record<string, unknown> {
  return {
    transaction_id: req.txnId,
    coordinator_id: req.coordinator,
    repo_id: req.repoId,
    operation: req.kind,
    incarnation: req.incarnation,
    base_generation: req.baseGeneration,
    fencing_token: req.fencingToken,
    new_checksum: req.newChecksum,
    updates: req.updates.map((u) => ({ ref: u.ref, old: u.oldOid, new: u.newOid })),
    ...(req.packHash ? { pack_hash: req.packHash } : {}),
    ...(req.newHead ? { new_head: req.newHead } : {}),
    ...(req.fsckIgnore ? { fsck_ignore: req.fsckIgnore } : {}),
    ...(req.stagedPacks?.length ? { staged_packs: req.stagedPacks } : {}),
    ...(req.replicaChecked ? { replica_checked: true } : {}),
  };
}

/** StageMessage is a `/replicate/stage` call's metadata: the pack that follows, and the fsck policy to judge it by. */
export interface StageMessage {
  readonly repoId: string;
  readonly packHash: string;
  readonly fsckIgnore?: readonly string[];
}

/** UNSTAGE_SCHEMA validates a `/replicate/unstage` call: drop a staged pack no prepare will adopt. */
export const UNSTAGE_SCHEMA = {
  body: {
    type: 'object',
    required: ['repo_id', 'pack_hash'],
    additionalProperties: false,
    properties: {
      repo_id: { type: 'string', minLength: 3, maxLength: 201 },
      pack_hash: { type: 'string', pattern: '^[0-9a-f]{40}([0-9a-f]{24})?$' },
    },
  },
} as const;

/** UnstageMessage is an unstage call's body (unstageToWire encodes it, UNSTAGE_SCHEMA checks it). */
export interface UnstageMessage {
  repo_id: string;
  pack_hash: string;
}

/** unstageToWire encodes an unstage call. */
export function unstageToWire(repoId: string, packHash: string): UnstageMessage {
  return { repo_id: repoId, pack_hash: packHash };
}

/** stageToWire encodes a stage call's metadata (parseStage decodes it). */
export function stageToWire(m: StageMessage): Record<string, unknown> {
  return { repo_id: m.repoId, pack_hash: m.packHash, ...(m.fsckIgnore ? { fsck_ignore: m.fsckIgnore } : {}) };
}

/**
 * UploadStageMessage is a `/replicate/stage-upload` call's metadata: no hash, the pack is still
 * arriving; `tips` are the new objects the push's commands name (at most MAX_COPY_TIPS), whose
 * connectivity the replica checks once the copy is indexed.
 */
export interface UploadStageMessage {
  readonly repoId: string;
  readonly fsckIgnore?: readonly string[];
  readonly tips?: readonly string[];
}

/** MAX_COPY_TIPS bounds the tips a copy's metadata names; a push with more names none (its prepare checks them). */
export const MAX_COPY_TIPS = 1_000;

/** stageUploadToWire encodes an upload stage's metadata (parseStageUpload decodes it). */
export function stageUploadToWire(m: UploadStageMessage): Record<string, unknown> {
  return { repo_id: m.repoId, ...(m.fsckIgnore ? { fsck_ignore: m.fsckIgnore } : {}), ...(m.tips?.length ? { tips: m.tips } : {}) };
}

/** MAX_META_BYTES bounds a message's JSON (a prepare names every ref of a push). */
export const MAX_META_BYTES = 64 * 1024 * 1024;

/** MAX_STAGED_PACKS bounds the packs one prepare may name (a group of pushes brings one each). */
const MAX_STAGED_PACKS = 1_000;

/** TXN_SCHEMA validates a commit or abort message. */
export const TXN_SCHEMA = {
  body: {
    type: 'object',
    required: ['transaction_id', 'coordinator_id'],
    properties: {
      transaction_id: { type: 'string', minLength: 1, maxLength: 100 },
      coordinator_id: { type: 'string', minLength: 1, maxLength: 100 },
      repo_id: { type: 'string', maxLength: 201 },
      coordinator_confirms: { type: 'boolean' },
    },
  },
} as const;

/**
 * TxnMessage is a commit or abort: which transaction, from which coordinator. With
 * `coordinator_confirms` the coordinator writes the replica's confirmation itself, with the
 * others' in one store transaction, once the commit is answered; a participant that does not
 * know the field confirms as before, and the second confirmation changes nothing.
 */
export interface TxnMessage {
  transaction_id: string;
  coordinator_id: string;
  repo_id?: string;
  coordinator_confirms?: boolean;
}

/** txnToWire encodes a commit or abort message. */
export function txnToWire(txnId: string, coordinator: string, repoId: string, coordinatorConfirms = false): TxnMessage {
  return {
    transaction_id: txnId,
    coordinator_id: coordinator,
    repo_id: repoId,
    ...(coordinatorConfirms ? { coordinator_confirms: true } : {}),
  };
}

/** parsePrepare validates a prepare body in the seed's field names. */
export function parsePrepare(body: unknown): PrepareRequest {
  if (typeof body !== 'object' || body === null) throw badRequest('prepare body must be a JSON object');
  const b = body as Record<string, unknown>;
  const missing = ['transaction_id', 'coordinator_id', 'repo_id'].filter((k) => typeof b[k] !== 'string' || b[k] === '');
  if (missing.length) throw badRequest(`missing required fields: ${missing.join(', ')}`);
  const kind = b.operation;
  if (kind !== 'create' && kind !== 'delete' && kind !== 'push') throw badRequest('operation must be create, delete or push');
  const int = (k: string): number => {
    const v = b[k];
    if (typeof v !== 'number' || !Number.isInteger(v)) throw badRequest(`${k} must be an integer`);
    return v;
  };
  const str = (k: string): string => {
    const v = b[k];
    if (typeof v !== 'string') throw badRequest(`${k} must be a string`);
    return v;
  };
  const rawUpdates = b.updates ?? [];
  if (!Array.isArray(rawUpdates)) throw badRequest('updates must be an array');
  const updates = rawUpdates.map((u: unknown) => {
    const o = u as Record<string, unknown>;
    if (
      typeof o?.ref !== 'string' ||
      typeof o.old !== 'string' ||
      typeof o.new !== 'string' ||
      !isOid(o.old) ||
      !isOid(o.new) ||
      !o.ref.startsWith('refs/')
    ) {
      throw badRequest('each update needs ref, old and new object ids');
    }
    return { ref: o.ref, oldOid: o.old, newOid: o.new };
  });
  const packHash = b.pack_hash;
  if (packHash !== undefined && (typeof packHash !== 'string' || !isOid(packHash))) throw badRequest('pack_hash must be an object id');
  const fsckIgnore = b.fsck_ignore;
  if (fsckIgnore !== undefined && !isFsckIgnoreList(fsckIgnore)) throw badRequest('fsck_ignore must be a list of fsck message ids');
  const stagedPacks = b.staged_packs ?? [];
  if (!Array.isArray(stagedPacks) || stagedPacks.length > MAX_STAGED_PACKS || !stagedPacks.every((h) => typeof h === 'string' && isOid(h)))
    throw badRequest(`staged_packs must be a list of at most ${MAX_STAGED_PACKS} object ids`);
  const newHead = b.new_head;
  if (newHead !== undefined && (typeof newHead !== 'string' || !newHead.startsWith('refs/heads/') || refNameProblem(newHead) !== null))
    throw badRequest('new_head must be a branch name');
  if (b.replica_checked !== undefined && typeof b.replica_checked !== 'boolean') throw badRequest('replica_checked must be a boolean');
  return {
    txnId: str('transaction_id'),
    coordinator: str('coordinator_id'),
    repoId: parseRepoId(b.repo_id),
    kind,
    incarnation: str('incarnation'),
    baseGeneration: int('base_generation'),
    fencingToken: int('fencing_token'),
    newChecksum: str('new_checksum'),
    updates,
    ...(typeof packHash === 'string' ? { packHash } : {}),
    ...(typeof newHead === 'string' ? { newHead } : {}),
    ...(isFsckIgnoreList(fsckIgnore) ? { fsckIgnore } : {}),
    ...(stagedPacks.length ? { stagedPacks } : {}),
    ...(b.replica_checked === true ? { replicaChecked: true } : {}),
  };
}

/** parseStage validates a stage call's metadata: the repo and the pack's trailer hash. */
export function parseStage(body: unknown): { repoId: string; packHash: string; fsckIgnore?: readonly string[] } {
  if (typeof body !== 'object' || body === null) throw badRequest('stage metadata must be a JSON object');
  const b = body as Record<string, unknown>;
  if (typeof b.pack_hash !== 'string' || !isOid(b.pack_hash)) throw badRequest('pack_hash must be an object id');
  if (b.fsck_ignore !== undefined && !isFsckIgnoreList(b.fsck_ignore)) throw badRequest('fsck_ignore must be a list of fsck message ids');
  return {
    repoId: parseRepoId(b.repo_id),
    packHash: b.pack_hash,
    ...(isFsckIgnoreList(b.fsck_ignore) ? { fsckIgnore: b.fsck_ignore } : {}),
  };
}

/** parseStageUpload validates an upload stage's metadata: the repo, the fsck policy, and the tips. */
export function parseStageUpload(body: unknown): UploadStageMessage {
  if (typeof body !== 'object' || body === null) throw badRequest('stage metadata must be a JSON object');
  const b = body as Record<string, unknown>;
  if (b.fsck_ignore !== undefined && !isFsckIgnoreList(b.fsck_ignore)) throw badRequest('fsck_ignore must be a list of fsck message ids');
  if (
    b.tips !== undefined &&
    !(Array.isArray(b.tips) && b.tips.length <= MAX_COPY_TIPS && b.tips.every((t) => typeof t === 'string' && isOid(t)))
  )
    throw badRequest(`tips must be a list of at most ${MAX_COPY_TIPS} object ids`);
  return {
    repoId: parseRepoId(b.repo_id),
    ...(isFsckIgnoreList(b.fsck_ignore) ? { fsckIgnore: b.fsck_ignore } : {}),
    ...(Array.isArray(b.tips) && b.tips.length > 0 ? { tips: b.tips as string[] } : {}),
  };
}

/**
 * readFrame reads `<len>\n<json>` from the front of a prepare body and returns the metadata and
 * the pack behind it as a stream, whose errors never go unhandled. No unshift: a small body can
 * have ended by the time its metadata is parsed, and unshifting after the end loses the pack.
 */
export async function readFrame(stream: Readable, signedDigest: string | null): Promise<{ meta: unknown; pack: Readable }> {
  const it = stream[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
  let buf = Buffer.alloc(0);
  for (;;) {
    const nl = buf.indexOf(10);
    if (nl !== -1) {
      const len = Number(buf.subarray(0, nl).toString('latin1'));
      if (!Number.isInteger(len) || len <= 0 || len > MAX_META_BYTES) throw badRequest('prepare metadata length invalid');
      if (buf.length >= nl + 1 + len) {
        // The signature covers the metadata (which names the pack's hash), never the streamed pack.
        if (bodyDigest(buf.subarray(nl + 1, nl + 1 + len)) !== signedDigest)
          throw unauthorized('peer signature does not match the prepare metadata');
        let meta: unknown;
        try {
          meta = JSON.parse(buf.subarray(nl + 1, nl + 1 + len).toString('utf8'));
        } catch {
          throw badRequest('prepare metadata is not JSON');
        }
        const rest = buf.subarray(nl + 1 + len);
        const pack = Readable.from(
          (async function* () {
            if (rest.length) yield rest;
            for (let r = await it.next(); !r.done; r = await it.next()) yield r.value;
          })(),
        );
        // A body that fails (its sender went away or went quiet past the idle guard) fails the
        // pack too. Its consumer (index-pack's pipeline) sees that; a pack nobody reads (a refusal
        // before it, whose route drains the rest) must not throw it as an unhandled error and end
        // the process.
        pack.on('error', () => undefined);
        return { meta, pack };
      }
    } else if (buf.length > 20) {
      throw badRequest('prepare body has no metadata length');
    }
    const r = await it.next();
    if (r.done) throw badRequest('prepare body ended before its metadata');
    buf = Buffer.concat([buf, r.value]);
  }
}
