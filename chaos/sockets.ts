import { readdir, readFile, readlink } from 'node:fs/promises';

/**
 * socketOwner finds which of the given processes (or their descendants) owns the loopback TCP
 * socket whose local port is `port` (Linux: /proc/net/tcp gives the socket's inode, and
 * /proc/<pid>/fd links name it). A fault proxy uses it to tell which node opened a connection,
 * so a partition can cut a node's outbound links too. Returns the owner's key, or null.
 */
export async function socketOwner(port: number, owners: ReadonlyMap<string, number>): Promise<string | null> {
  const inode = await inodeOfLocalPort(port);
  if (inode === null) return null;
  const needle = `socket:[${inode}]`;
  for (const [key, pid] of owners) {
    for (const p of await processTree(pid)) {
      const fds = await readdir(`/proc/${p}/fd`).catch(() => [] as string[]);
      for (const fd of fds) {
        if ((await readlink(`/proc/${p}/fd/${fd}`).catch(() => '')) === needle) return key;
      }
    }
  }
  return null;
}

async function inodeOfLocalPort(port: number): Promise<string | null> {
  const hex = `:${port.toString(16).toUpperCase().padStart(4, '0')}`;
  const text = await readFile('/proc/net/tcp', 'utf8').catch(() => '');
  for (const line of text.split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    // f[1] local address:port, f[9] inode
    if (f[1]?.endsWith(hex) && f[9] && f[9] !== '0') return f[9];
  }
  return null;
}

async function processTree(pid: number): Promise<number[]> {
  const out: number[] = [];
  const stack = [pid];
  for (let i = 0; stack.length > 0 && i < 1_000; i++) {
    const p = stack.pop()!;
    out.push(p);
    for (const task of await readdir(`/proc/${p}/task`).catch(() => [] as string[])) {
      const kids = await readFile(`/proc/${p}/task/${task}/children`, 'utf8').catch(() => '');
      for (const k of kids.trim().split(/\s+/)) if (k) stack.push(Number(k));
    }
  }
  return out;
}
