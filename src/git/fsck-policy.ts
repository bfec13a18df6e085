/**
 * The cluster's fsck policy: which of git's object checks are let through when a pack is
 * received (receive-pack), verified by a participant (index-pack --strict) or fetched by repair
 * (transfer.fsckObjects). One list, carried in every push's prepare so the coordinator and its
 * participants judge a pack alike.
 *
 * By default the checks git itself only warns about in old histories are let through (the
 * Linux, redis and git histories have zero-padded file modes and odd dates), as large hosts do;
 * malformed objects and the path checks that guard checkouts (`.git`, `..`, `.gitmodules`)
 * stay fatal and cannot be let through. See git-fsck(1), "FSCK MESSAGES".
 */

/** TOLERATED_BY_DEFAULT are git's warn-level checks accepted unless the operator says otherwise. */
export const TOLERATED_BY_DEFAULT: readonly string[] = [
  'badDate',
  'badDateOverflow',
  'badTimezone',
  'missingSpaceBeforeDate',
  'zeroPaddedDate',
  'zeroPaddedFilemode',
  'badFilemode',
  'missingEmail',
  'badEmail',
  'missingNameBeforeEmail',
  'missingSpaceBeforeEmail',
  'emptyName',
  'nulInCommit',
  'badTagName',
  'missingTaggerEntry',
  'fullPathname',
];

/** ALWAYS_FATAL are checks that guard clients' checkouts: never let through. */
const ALWAYS_FATAL = new Set([
  'hasDot',
  'hasDotdot',
  'hasDotgit',
  'gitmodulesName',
  'gitmodulesPath',
  'gitmodulesUrl',
  'gitmodulesSymlink',
  'gitmodulesBlob',
  'gitmodulesParse',
  'gitmodulesUpdate',
  'gitattributesBlob',
  'gitattributesLarge',
  'gitattributesLineLength',
  'gitattributesMissing',
  'gitattributesSymlink',
]);

/**
 * parseFsckIgnore reads `--fsck-ignore`: `default`, `none` (every check fatal), or a comma list
 * of git's message ids. A path-safety check in the list is refused.
 */
export function parseFsckIgnore(value: string | undefined): readonly string[] {
  if (value === undefined || value === '' || value === 'default') return TOLERATED_BY_DEFAULT;
  if (value === 'none') return [];
  const ids = value
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  for (const id of ids) {
    if (!/^[a-zA-Z]{1,64}$/.test(id)) throw new Error(`--fsck-ignore: '${id}' is not a git fsck message id (e.g. zeroPaddedFilemode)`);
    if (ALWAYS_FATAL.has(id)) throw new Error(`--fsck-ignore: ${id} guards clients' checkouts and stays fatal`);
  }
  return ids;
}

/** isFsckIgnoreList says whether a list from a peer is well formed (ids only, no path-safety check). */
export function isFsckIgnoreList(value: unknown): value is string[] {
  return (
    Array.isArray(value) &&
    value.length <= 64 &&
    value.every((v) => typeof v === 'string' && /^[a-zA-Z]{1,64}$/.test(v) && !ALWAYS_FATAL.has(v))
  );
}

/** fsckConfig is the policy as git config for receive-pack (`receive`) or a fetch or clone (`fetch`). */
export function fsckConfig(section: 'receive' | 'fetch', ignore: readonly string[]): Record<string, string> {
  return Object.fromEntries(ignore.map((id) => [`${section}.fsck.${id}`, 'ignore']));
}

/** indexPackStrict is index-pack's `--strict` with the policy. */
export function indexPackStrict(ignore: readonly string[]): string {
  return ignore.length === 0 ? '--strict' : `--strict=${ignore.map((id) => `${id}=ignore`).join(',')}`;
}
