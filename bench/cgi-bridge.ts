/**
 * cgi-bridge is the `git http-backend` process of the benchmark: `node cgi-bridge.js <repos dir> <port>`.
 * A minimal CGI/1.1 gateway (RFC 3875) on 127.0.0.1: each request runs `git http-backend` with
 * the CGI variables set, the request body on its stdin; the CGI header block of its stdout
 * (`Status:`, `Content-Type:`, ... up to the blank line) becomes the HTTP status and headers and
 * the rest is streamed as the body. It exits when its stdin closes.
 */
import { spawn } from 'node:child_process';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';

const [root, portText] = process.argv.slice(2);
if (!root || !portText) {
  process.stderr.write('usage: cgi-bridge <repos dir> <port>\n');
  process.exit(2);
}

const MAX_HEADER_BYTES = 64 * 1024;

function header(req: IncomingMessage, name: string): string | undefined {
  const v = req.headers[name];
  return Array.isArray(v) ? v[0] : v;
}

function cgiEnv(req: IncomingMessage): NodeJS.ProcessEnv {
  const url = new URL(req.url ?? '/', 'http://127.0.0.1');
  const env: NodeJS.ProcessEnv = {
    PATH: process.env.PATH,
    HOME: process.env.HOME,
    GIT_CONFIG_NOSYSTEM: '1',
    GIT_CONFIG_GLOBAL: '/dev/null',
    GIT_PROJECT_ROOT: root,
    GIT_HTTP_EXPORT_ALL: '1',
    GATEWAY_INTERFACE: 'CGI/1.1',
    SERVER_PROTOCOL: `HTTP/${req.httpVersion}`,
    SERVER_SOFTWARE: 'git-replication-bench-cgi-bridge',
    REQUEST_METHOD: req.method ?? 'GET',
    PATH_INFO: decodeURIComponent(url.pathname),
    QUERY_STRING: url.search.slice(1),
    REMOTE_ADDR: req.socket.remoteAddress ?? '127.0.0.1',
    REMOTE_USER: 'bench',
  };
  const type = header(req, 'content-type');
  if (type) env.CONTENT_TYPE = type;
  const length = header(req, 'content-length');
  if (length) env.CONTENT_LENGTH = length;
  const encoding = header(req, 'content-encoding');
  if (encoding) env.HTTP_CONTENT_ENCODING = encoding;
  const protocol = header(req, 'git-protocol');
  if (protocol) env.GIT_PROTOCOL = protocol;
  return env;
}

/** parseCgiHeaders splits the CGI header block; returns null until the blank line has arrived. */
function parseCgiHeaders(buf: Buffer): { status: number; headers: Record<string, string>; rest: Buffer } | null {
  let end = buf.indexOf('\r\n\r\n');
  let sep = 4;
  const lf = buf.indexOf('\n\n');
  if (lf >= 0 && (end < 0 || lf < end)) {
    end = lf;
    sep = 2;
  }
  if (end < 0) return null;
  let status = 200;
  const headers: Record<string, string> = {};
  for (const line of buf.subarray(0, end).toString('latin1').split(/\r?\n/)) {
    const colon = line.indexOf(':');
    if (colon <= 0) continue;
    const name = line.slice(0, colon).trim();
    const value = line.slice(colon + 1).trim();
    if (name.toLowerCase() === 'status') status = Number.parseInt(value, 10) || 500;
    else headers[name] = value;
  }
  return { status, headers, rest: buf.subarray(end + sep) };
}

function handle(req: IncomingMessage, res: ServerResponse): void {
  const child = spawn('git', ['http-backend'], { env: cgiEnv(req), stdio: ['pipe', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (d: string) => {
    if (stderr.length < 4096) stderr += d;
  });
  child.on('error', (err) => {
    stderr += String(err);
  });
  child.stdin.on('error', () => undefined);
  req.pipe(child.stdin);
  res.on('close', () => {
    if (!res.writableFinished && child.exitCode === null) child.kill('SIGKILL');
  });

  let head = Buffer.alloc(0);
  let parsed = false;
  const onData = (chunk: Buffer): void => {
    head = Buffer.concat([head, chunk]);
    const p = parseCgiHeaders(head);
    if (!p) {
      if (head.length > MAX_HEADER_BYTES) child.kill('SIGKILL');
      return;
    }
    parsed = true;
    child.stdout.off('data', onData);
    res.writeHead(p.status, p.headers);
    if (p.rest.length > 0) res.write(p.rest);
    child.stdout.pipe(res);
  };
  child.stdout.on('data', onData);
  child.on('close', (code, signal) => {
    if (parsed) return;
    if (!res.headersSent) {
      res.writeHead(502, { 'content-type': 'text/plain' });
      res.end(`git http-backend failed (${signal ?? code}): ${stderr.trim()}\n`);
    }
  });
}

const server = createServer(handle);
server.listen(Number(portText), '127.0.0.1', () => {
  process.stdout.write(`listening on ${portText}\n`);
});
process.stdin.resume();
process.stdin.on('close', () => process.exit(0));
process.stdin.on('end', () => process.exit(0));
process.on('SIGTERM', () => process.exit(0));
