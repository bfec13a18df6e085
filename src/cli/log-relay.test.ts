import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { logFormatOf, prettyLines, relayLogs } from './log-relay.js';

const RECORD = JSON.stringify({
  level: 30,
  time: Date.UTC(2026, 0, 2, 3, 4, 5, 6),
  node: 'node-2',
  txnId: 't-1',
  refs: ['refs/heads/main'],
  msg: 'transaction committed',
});

describe('logFormatOf', () => {
  it.each([
    [undefined, true, 'pretty'],
    [undefined, false, 'json'],
    ['json', true, 'json'],
    ['pretty', false, 'pretty'],
  ] as const)('flag %s on a tty=%s is %s', (flag, tty, format) => {
    expect(logFormatOf(flag, tty)).toBe(format);
  });
});

describe('prettyLines', () => {
  it('one readable line: level, node, message, then the fields; no JSON record left', () => {
    const line = prettyLines(false)(RECORD);
    expect(line.trimEnd().split('\n')).toHaveLength(1);
    expect(line).toMatch(/^\[\d\d:\d\d:\d\d\.\d{3}\] INFO: node-2 transaction committed /);
    expect(line).toContain('"txnId":"t-1"');
    expect(line).not.toContain('"level"');
  });

  it('colours only when asked (on a terminal)', () => {
    // eslint-disable-next-line no-control-regex
    const escape = /\u001b\[/;
    expect(prettyLines(true)(RECORD)).toMatch(escape);
    expect(prettyLines(false)(RECORD)).not.toMatch(escape);
  });

  it('a line that is not a record passes through as it is', () => {
    expect(prettyLines(false)('    at Object.<anonymous> (main.js:1:1)')).toBe('    at Object.<anonymous> (main.js:1:1)\n');
  });
});

describe('relayLogs', () => {
  it('prettifies each line of a stream, lines split across chunks included', async () => {
    const from = new PassThrough();
    let text = '';
    relayLogs(from, {
      write: (s: string) => {
        text += s;
      },
    });
    from.write(RECORD.slice(0, 20));
    from.write(`${RECORD.slice(20)}\n${RECORD}\n`);
    from.end();
    await new Promise((r) => setImmediate(r));
    expect(text.match(/INFO: node-2 transaction committed/g)).toHaveLength(2);
    expect(text.split('\n').filter(Boolean)).toHaveLength(2);
  });
});
