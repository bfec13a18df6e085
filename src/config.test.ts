import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { serveConfig } from './cli/serve.js';
import { ConfigError, DEFAULTS, describeDefault, loadSettings, optionKey, SETTINGS, type SettingName, type SettingSpec } from './config.js';

const NAMES = Object.keys(SETTINGS) as SettingName[];
const spec = (name: SettingName): SettingSpec => SETTINGS[name];
const NUMERIC = NAMES.filter((n) => spec(n).kind !== 'text');

describe('loadSettings', () => {
  it('gives every default when nothing is set, frozen', () => {
    const s = loadSettings({}, {});
    for (const name of NAMES) {
      const d = DEFAULTS[name];
      if (d === null) expect(name in s, name).toBe(false);
      else expect(s[name], name).toBe(d);
    }
    expect(Object.isFrozen(s)).toBe(true);
  });

  it('reads the environment, and a flag wins over it', () => {
    const env = {
      NODE_TTL_MS: '2000',
      LOCK_TTL_MS: '4000',
      RESOLVE_AFTER_MS: '1000',
      REPAIR_INTERVAL_MS: '300',
      BODY_IDLE_TIMEOUT: '90s',
      MAX_PUSH_SIZE: '2g',
      PORT: '4000',
    };
    const s = loadSettings({ port: '5000', maxFetchRequestSize: '512k' }, env);
    expect([s.nodeTtlMs, s.lockTtlMs, s.resolveAfterMs, s.repairIntervalMs, s.bodyIdleMs]).toEqual([2000, 4000, 1000, 300, 90_000]);
    expect([s.maxPushBytes, s.maxUploadRequestBytes, s.port]).toEqual([2 * 1024 ** 3, 512 * 1024, 5000]);
  });

  it.each([
    ['500ms', 500],
    ['90s', 90_000],
    ['1.5s', 1_500],
    ['10m', 600_000],
    ['1h', 3_600_000],
    ['2000', 2_000],
  ])('reads the duration %s as %i ms', (text, ms) => {
    expect(loadSettings({}, { LOCK_WAIT_MS: text }).lockWaitMs).toBe(ms);
  });

  it('takes a size beyond any disk (how the tests simulate a full one)', () => {
    expect(loadSettings({ minFreeDisk: '100000000g' }, {}).minFreeDiskBytes).toBe(100_000_000 * 1024 ** 3);
  });

  it('takes 0 where 0 means off', () => {
    const s = loadSettings(
      {},
      { REPAIR_INTERVAL_MS: '0', VERIFY_INTERVAL_MS: '0', FSCK_INTERVAL_MS: '0', REPACK_AFTER_PACKS: '0', SHUTDOWN_GRACE: '0', PORT: '0' },
    );
    expect([s.repairIntervalMs, s.verifyIntervalMs, s.fsckIntervalMs, s.repackAfterPacks, s.shutdownGraceMs, s.port]).toEqual([
      0, 0, 0, 0, 0, 0,
    ]);
  });

  // Every numeric setting refuses negative, fractional and non-numeric values, and values below its minimum.
  const refusals = NUMERIC.flatMap((name) => {
    const s = spec(name);
    const bad = ['-5', 'abc', '', ' '].filter((t) => t.trim() !== '');
    if (s.kind !== 'bytes') bad.push('1.5');
    if ((s.min ?? 0) >= 1) bad.push('0');
    if (s.min !== undefined && s.min > 1) bad.push(String(s.min - 1));
    return bad.map((text) => [name, text] as const);
  });

  it.each(refusals)('refuses %s = %j with one line naming it', (name, text) => {
    const s = spec(name);
    const flags = s.flag ? { [optionKey(s.flag)]: text } : {};
    const env = s.flag ? {} : { [s.env]: text };
    let thrown: unknown = null;
    try {
      loadSettings(flags, env);
    } catch (err) {
      thrown = err;
    }
    expect(thrown).toBeInstanceOf(ConfigError);
    const err = thrown as ConfigError;
    expect(err.setting).toBe(name);
    expect(err.message).toContain(s.flag ?? s.env);
    expect(err.message).not.toContain('\n');
  });

  it('a 0 TTL stops serve with a message naming the setting', () => {
    expect(() => serveConfig({}, { NODE_TTL_MS: '0' })).toThrow("NODE_TTL_MS: must be at least 1 ms, got '0'");
    expect(() => serveConfig({ txnRetention: '30s' }, {})).toThrow(/--txn-retention \(TXN_RETENTION\): must be at least 60000 ms/);
    expect(() => serveConfig({}, { SSH_PORT: 'twenty-two' })).toThrow(/SSH_PORT/);
  });

  it('serveConfig reads the test knobs at start: fail points and protocol versions', () => {
    const cfg = serveConfig({}, { GIT_REPLICATION_FAILPOINTS: 'participant.afterPrepare=crash', GIT_REPLICATION_PROTOCOL: '2-3' });
    expect([cfg.failpoints, cfg.protocol]).toEqual(['participant.afterPrepare=crash', { min: 2, max: 3 }]);
    expect(() => serveConfig({}, { GIT_REPLICATION_PROTOCOL: 'new' })).toThrow(/GIT_REPLICATION_PROTOCOL/);
  });

  it('serveConfig hands the timings down and keeps the derived default of max git per client', () => {
    const cfg = serveConfig(
      { maxGitProcesses: '9', maxQueuedPushes: '12' },
      { LOCK_WAIT_MS: '2s', COMMIT_WAIT_MS: '500', GIT_TIMEOUT_MS: '10m', FULL_PASS_MS: '1m', MAX_GROUP_PUSHES: '8' },
    );
    expect(cfg.maxGitPerClient).toBe(5);
    expect([cfg.maxQueuedPushes, cfg.maxGroupPushes]).toEqual([12, 8]);
    expect(cfg.timing).toEqual({
      lockWaitMs: 2_000,
      prepareTimeoutMs: DEFAULTS.prepareTimeoutMs,
      commitTimeoutMs: DEFAULTS.commitTimeoutMs,
      peerTimeoutMs: DEFAULTS.peerTimeoutMs,
      commitWaitMs: 500,
      catchUpMs: DEFAULTS.catchUpMs,
      gitTimeoutMs: 600_000,
      settleMs: DEFAULTS.settleMs,
      courtesyMs: DEFAULTS.courtesyMs,
      uploadWaitMs: DEFAULTS.uploadWaitMs,
      swapLockWaitMs: DEFAULTS.swapLockWaitMs,
      fullPassMs: 60_000,
    });
    expect(() => serveConfig({}, { MAX_GROUP_PUSHES: '0' })).toThrow(/MAX_GROUP_PUSHES: must be at least 1/);
  });
});

describe('docs/OPERATIONS.md', () => {
  /** rows reads the "Settings" table: setting, flag, environment, default, minimum, meaning. */
  function rows(): Map<string, string[]> {
    const text = readFileSync(new URL('../docs/OPERATIONS.md', import.meta.url), 'utf8');
    const section = text.slice(text.indexOf('\n## Settings\n'), text.indexOf('\n## ', text.indexOf('\n## Settings\n') + 5));
    const out = new Map<string, string[]>();
    for (const line of section.split('\n')) {
      const m = /^\| `(\w+)` \| (.*) \|$/.exec(line);
      if (m)
        out.set(
          m[1]!,
          m[2]!.split(' | ').map((c) => c.trim()),
        );
    }
    return out;
  }

  it('lists every setting with its flag, variable, default, minimum and meaning', () => {
    const table = rows();
    for (const name of NAMES) {
      const s = spec(name);
      expect(table.get(name), name).toEqual([
        s.flag ? `\`${s.flag}\`` : '',
        `\`${s.env}\``,
        describeDefault(name),
        s.min === undefined ? '' : String(s.min),
        s.doc,
      ]);
    }
  });

  it('lists no setting the module lacks', () => {
    expect([...rows().keys()].filter((k) => !(k in SETTINGS))).toEqual([]);
  });
});
