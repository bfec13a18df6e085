import { describe, expect, it } from 'vitest';
import { Progress, renderBar, type ProgressStream } from './progress.js';

/** sink collects what a Progress writes, as a terminal (`isTTY`) of `columns` or as a pipe. */
function sink(tty: boolean, columns?: number): ProgressStream & { text: string } {
  const s = {
    text: '',
    isTTY: tty,
    columns,
    write(chunk: string) {
      s.text += chunk;
      return true;
    },
  };
  return s;
}

describe('renderBar', () => {
  const cases: Array<[number, number, number, string]> = [
    [0, 10, 10, '[----------]'],
    [3, 10, 10, '[###-------]'],
    [10, 10, 10, '[##########]'],
    [1, 3, 6, '[##----]'],
    [2.5, 5, 4, '[##--]'],
    [12, 10, 5, '[#####]'],
    [-1, 10, 5, '[-----]'],
    [0, 0, 5, '[-----]'],
  ];
  it.each(cases)('%d of %d in %d cells is %s', (done, total, width, bar) => {
    expect(renderBar(done, total, width)).toBe(bar);
  });
});

describe('Progress on a pipe', () => {
  it('writes a plain line per change and nothing for an unchanged one', () => {
    const out = sink(false);
    const p = new Progress(out, 'repair acme/site', 3);
    p.update(1, 'replicas in sync');
    p.update(1, 'replicas in sync');
    p.update(2, 'replicas in sync');
    p.update(3, 'replicas in sync');
    p.end();
    expect(out.text).toBe(
      'repair acme/site: 1 of 3 replicas in sync\nrepair acme/site: 2 of 3 replicas in sync\nrepair acme/site: 3 of 3 replicas in sync\n',
    );
  });

  it('never writes a carriage return or an escape code; results go to their own stream', () => {
    const err = sink(false);
    const out = sink(false);
    const p = new Progress(err, 'verify', 2);
    p.update(0);
    p.print('acme/a on node-1: ok', out);
    p.update(1, '', 4);
    expect(err.text).toBe('verify: 0 of 2\nverify: 1 of 4\n');
    expect(out.text).toBe('acme/a on node-1: ok\n');
    expect(err.text.includes('\r') || err.text.includes('\u001b')).toBe(false);
  });
});

describe('Progress on a terminal', () => {
  it('redraws one line in place with a bar, and ends on a fresh line', () => {
    const err = sink(true, 80);
    const p = new Progress(err, 'verify', 4);
    p.update(1);
    p.update(4, 'done');
    p.end();
    expect(err.text).toBe(
      '\rverify [#######-----------------------] 1 of 4\u001b[K\rverify [##############################] 4 of 4 done\u001b[K\n',
    );
  });

  it('clears the bar before a result line, so the two never share a line', () => {
    const err = sink(true, 80);
    const out = sink(true, 80);
    const p = new Progress(err, 'verify', 2);
    p.update(1);
    p.print('acme/a on node-1: ok', out);
    expect(err.text.endsWith('\r\u001b[K')).toBe(true);
    expect(out.text).toBe('acme/a on node-1: ok\n');
  });

  it('a terminal that reports no width (0 columns) is taken as 80 wide', () => {
    const err = sink(true, 0);
    new Progress(err, 'verify', 4).update(1);
    expect(err.text).toBe('\rverify [#######-----------------------] 1 of 4\u001b[K');
  });

  it('fits a narrow terminal: the bar shrinks and the line is cut before the last column', () => {
    const err = sink(true, 30);
    const p = new Progress(err, 'repair acme/site', 3);
    p.update(2, 'replicas in sync; node-3 copying 120 of 400 objects');
    const line = err.text.slice(1, -'\u001b[K'.length);
    expect(line.length).toBeLessThanOrEqual(29);
    expect(line.startsWith('repair acme/site [')).toBe(true);
  });
});
