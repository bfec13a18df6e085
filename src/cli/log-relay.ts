import { createInterface } from 'node:readline';
import type { Readable } from 'node:stream';
import PinoPretty from 'pino-pretty';

/** LogFormat is how `up` shows its nodes' logs: pino-pretty lines, or the nodes' JSON as it is. */
export type LogFormat = 'pretty' | 'json';

/** LOG_FORMATS are the values of `up --log-format`. */
export const LOG_FORMATS: readonly LogFormat[] = ['pretty', 'json'];

/** logFormatOf picks the format: the flag when given, else pretty on a terminal and JSON for a pipe or a file (log shippers read JSON). */
export function logFormatOf(flag: LogFormat | undefined, tty: boolean): LogFormat {
  return flag ?? (tty ? 'pretty' : 'json');
}

/** LogSink is where relayed lines go (stdout, or a test's buffer). */
export interface LogSink {
  write(chunk: string): unknown;
  readonly isTTY?: boolean;
}

/**
 * prettyLines makes the pino-pretty formatter `up` uses: one line per record, the node's id
 * before the message, the time of day, colour only on a terminal. A line that is not a pino
 * record (a stack trace a node printed) passes through as it is.
 */
export function prettyLines(colorize: boolean): (line: string) => string {
  return PinoPretty.prettyFactory({
    colorize,
    singleLine: true,
    translateTime: 'SYS:HH:MM:ss.l',
    ignore: 'pid,hostname,node',
    messageFormat: '{node} {msg}',
  });
}

/**
 * relayLogs copies a node's stdout (its pino JSON lines) to `to`, line by line through
 * pino-pretty. The nodes keep writing JSON; only `up`'s own output is prettified, so a node
 * started by hand or under systemd logs the same as under `up`.
 */
export function relayLogs(from: Readable, to: LogSink): void {
  const pretty = prettyLines(to.isTTY === true);
  const lines = createInterface({ input: from, crlfDelay: Infinity });
  lines.on('line', (line) => {
    const out = pretty(line);
    to.write(out.endsWith('\n') ? out : `${out}\n`);
  });
}
