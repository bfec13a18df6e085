/**
 * ngs-server is the node-git-server process of the benchmark: `node ngs-server.js <repos dir> <port>`.
 * It serves every bare repo under the directory on 127.0.0.1 (node-git-server's own listen()
 * binds every interface), creates missing repos on first use and accepts every push. It exits
 * when its stdin closes, so it never outlives the benchmark that started it.
 */
import { createServer } from 'node:http';
import ngs from 'node-git-server';

const [root, portText] = process.argv.slice(2);
if (!root || !portText) {
  process.stderr.write('usage: ngs-server <repos dir> <port>\n');
  process.exit(2);
}

const repos = new ngs.Git(root, { autoCreate: true });
const accept = (request: ngs.HttpDuplex): void => {
  request.accept();
};
for (const event of ['push', 'tag', 'fetch', 'info', 'head']) repos.on(event, accept);
repos.on('error', (err: unknown) => {
  process.stderr.write(`node-git-server: ${String(err)}\n`);
});

const server = createServer((req, res) => {
  repos.handle(req, res);
});
server.listen(Number(portText), '127.0.0.1', () => {
  process.stdout.write(`listening on ${portText}\n`);
});
process.stdin.resume();
process.stdin.on('close', () => process.exit(0));
process.stdin.on('end', () => process.exit(0));
process.on('SIGTERM', () => process.exit(0));
