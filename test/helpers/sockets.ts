import { connect, type Socket } from 'node:net';

/**
 * connectFrom opens a TCP connection to 127.0.0.1:`port` from the loopback address `from` (any of
 * 127.0.0.0/8 on Linux: a client address of its own) and sends nothing; it says, `ms` after the
 * connection opened, whether the server has closed it by then. An error before it opens fails.
 * The caller closes `socket`.
 */
export function connectFrom(port: number, from: string, ms = 300): Promise<{ socket: Socket; closed: boolean }> {
  return new Promise((resolve, reject) => {
    const socket = connect({ port, host: '127.0.0.1', localAddress: from });
    socket.once('error', reject);
    socket.once('connect', () => {
      socket.removeListener('error', reject);
      socket.on('error', () => undefined);
      const timer = setTimeout(() => resolve({ socket, closed: false }), ms);
      socket.once('close', () => {
        clearTimeout(timer);
        resolve({ socket, closed: true });
      });
    });
  });
}
