import { X509Certificate } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { createSecureContext } from 'node:tls';
import { errorMessage } from '../domain/errors.js';

/** TlsFiles are the PEM paths `serve` takes: a certificate and key to listen with, a CA for peers. */
export interface TlsFiles {
  /** cert and key come together or not at all: with them the node serves HTTPS. */
  readonly cert?: string;
  readonly key?: string;
  /** ca verifies `https://` peers (peer calls, proxied requests, repair fetches); default the system CAs. */
  readonly ca?: string;
}

/** TlsMaterial is what a node loaded from its TlsFiles at start. */
export interface TlsMaterial {
  /** server is the listener's certificate chain and key; null serves plain HTTP. */
  readonly server: { readonly cert: Buffer; readonly key: Buffer } | null;
  /** ca is the peers' CA (PEM) and its path (git's `http.sslCAInfo`); null trusts the system CAs. */
  readonly ca: { readonly pem: Buffer; readonly path: string } | null;
}

/** TlsConfigError says a TLS file is missing, unreadable or not usable; the node does not start. */
export class TlsConfigError extends Error {
  readonly code = 'ERR_TLS_CONFIG';

  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'TlsConfigError';
  }
}

async function readPem(path: string, flag: string): Promise<Buffer> {
  try {
    return await readFile(path);
  } catch (err) {
    throw new TlsConfigError(`cannot read ${flag} ${path}: ${errorMessage(err)}`, { cause: err });
  }
}

/**
 * loadTls reads the TLS files once, at start, and checks them with OpenSSL (a key that does not
 * match its certificate, or a file that is not PEM, fails here rather than at the first client).
 * Rotating a certificate is a restart.
 */
export async function loadTls(files: TlsFiles): Promise<TlsMaterial> {
  if ((files.cert === undefined) !== (files.key === undefined)) {
    throw new TlsConfigError('--tls-cert and --tls-key go together: give both or neither');
  }
  let server: TlsMaterial['server'] = null;
  if (files.cert !== undefined && files.key !== undefined) {
    server = { cert: await readPem(files.cert, '--tls-cert'), key: await readPem(files.key, '--tls-key') };
    try {
      createSecureContext(server);
    } catch (err) {
      throw new TlsConfigError(
        `--tls-cert ${files.cert} and --tls-key ${files.key} are not a usable certificate and key: ${errorMessage(err)}`,
        { cause: err },
      );
    }
  }
  let ca: TlsMaterial['ca'] = null;
  if (files.ca !== undefined) {
    // git runs repair fetches in other directories: the path it is given must be absolute.
    ca = { pem: await readPem(files.ca, '--tls-ca'), path: resolve(files.ca) };
    try {
      // createSecureContext accepts a CA file without a single certificate in it; X509Certificate does not.
      new X509Certificate(ca.pem);
    } catch (err) {
      throw new TlsConfigError(`--tls-ca ${files.ca} is not a usable PEM certificate: ${errorMessage(err)}`, { cause: err });
    }
  }
  return { server, ca };
}
