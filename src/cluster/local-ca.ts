import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmod, mkdir, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

/** OPENSSL_INSTALL_HINT tells a user without the openssl binary how to get it. */
export const OPENSSL_INSTALL_HINT =
  'install OpenSSL (Debian/Ubuntu: apt-get install openssl), set OPENSSL_BIN to its path, ' +
  'or make certificates yourself and start the nodes with serve --tls-cert/--tls-key/--tls-ca';

/** CERT_DAYS is how long the throw-away certificates are valid. */
const CERT_DAYS = 365;
const OPENSSL_TIMEOUT_MS = 30_000;

/** LocalCa is where makeLocalCa put the CA and each node's certificate and key. */
export interface LocalCa {
  readonly dir: string;
  /** ca is the CA certificate: `--tls-ca` for nodes, `http.sslCAInfo` for git clients. */
  readonly ca: string;
  readonly nodes: Record<string, { readonly cert: string; readonly key: string }>;
}

/** OpensslMissingError says there is no openssl binary to make certificates with. */
export class OpensslMissingError extends Error {
  readonly code = 'ERR_OPENSSL_MISSING';

  constructor(binary: string) {
    super(`making TLS certificates needs the openssl binary and '${binary}' was not found: ${OPENSSL_INSTALL_HINT}`);
    this.name = 'OpensslMissingError';
  }
}

/** openssl runs the openssl binary with an argv array (no shell) and throws with its stderr. */
function openssl(binary: string, args: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile(binary, args, { timeout: OPENSSL_TIMEOUT_MS }, (err, _stdout, stderr) => {
      if (!err) return resolve();
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return reject(new OpensslMissingError(binary));
      reject(new Error(`openssl ${args[0] ?? ''} failed: ${stderr.trim() || err.message}`, { cause: err }));
    });
  });
}

/** caStillValid says the CA at `dir` exists and is valid for at least another 30 days. */
async function caStillValid(binary: string, dir: string): Promise<boolean> {
  const present = await Promise.all(
    ['ca.pem', 'ca-key.pem'].map((f) =>
      stat(join(dir, f)).then(
        () => true,
        () => false,
      ),
    ),
  );
  if (!present.every(Boolean)) return false;
  return openssl(binary, ['x509', '-checkend', String(30 * 86_400), '-noout', '-in', join(dir, 'ca.pem')]).then(
    () => true,
    () => false,
  );
}

/**
 * makeLocalCa makes (or keeps, while it is valid) a throw-away CA in `dir` and one certificate per
 * node signed by it, for a cluster on one machine: subjectAltName IP:127.0.0.1 and DNS:localhost,
 * P-256 keys. The directory is 0700 and every file in it 0600. Nothing else should trust this CA.
 */
export async function makeLocalCa(
  dir: string,
  nodeIds: readonly string[],
  binary = process.env.OPENSSL_BIN ?? 'openssl',
): Promise<LocalCa> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  await chmod(dir, 0o700);
  const ca = join(dir, 'ca.pem');
  const caKey = join(dir, 'ca-key.pem');
  const key = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  if (!(await caStillValid(binary, dir))) {
    await openssl(binary, [
      'req',
      '-x509',
      ...key,
      '-keyout',
      caKey,
      '-out',
      ca,
      '-days',
      String(CERT_DAYS + 30),
      '-subj',
      '/CN=git-replication local CA',
      '-addext',
      'basicConstraints=critical,CA:TRUE',
      '-addext',
      'keyUsage=critical,keyCertSign,cRLSign',
    ]);
  }
  const ext = join(dir, 'node-ext.cnf');
  await writeFile(
    ext,
    'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=critical,CA:FALSE\n' +
      'keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\n',
    { mode: 0o600 },
  );
  const nodes: Record<string, { cert: string; key: string }> = {};
  try {
    for (const id of nodeIds) {
      if (!/^[A-Za-z0-9._-]+$/.test(id)) throw new Error(`node id '${id}' cannot name a certificate file`);
      const files = { cert: join(dir, `${id}.pem`), key: join(dir, `${id}-key.pem`) };
      const csr = join(dir, `${id}.csr`);
      await openssl(binary, ['req', '-new', ...key, '-keyout', files.key, '-out', csr, '-subj', `/CN=${id}`]);
      await openssl(binary, [
        'x509',
        '-req',
        '-in',
        csr,
        '-CA',
        ca,
        '-CAkey',
        caKey,
        '-set_serial',
        `0x${randomBytes(16).toString('hex')}`,
        '-days',
        String(CERT_DAYS),
        '-extfile',
        ext,
        '-out',
        files.cert,
      ]);
      await rm(csr, { force: true });
      nodes[id] = files;
    }
  } finally {
    await rm(ext, { force: true });
  }
  for (const f of await readdir(dir)) await chmod(join(dir, f), 0o600);
  return { dir, ca, nodes };
}
