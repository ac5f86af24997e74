import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { RouteTls } from '@freshet/nats';

/**
 * A throwaway CA and one certificate per route node (RSA 2048, 1 day, SAN IP 127.0.0.1 and
 * localhost: what the peers dial), made with the openssl command in `dir`. `prefix` keeps
 * several sets apart (a second CA for a stranger's node). Tests only: keys are not protected.
 */
export function writeRouteCerts(dir: string, nodes: number, prefix = 'route'): RouteTls[] {
  const ssl = (...args: string[]) => execFileSync('openssl', args, { stdio: 'pipe' });
  const ca = join(dir, `${prefix}-ca.pem`);
  const caKey = join(dir, `${prefix}-ca.key`);
  ssl(
    'req',
    '-x509',
    '-newkey',
    'rsa:2048',
    '-nodes',
    '-days',
    '1',
    '-subj',
    `/CN=${prefix} test CA`,
    '-keyout',
    caKey,
    '-out',
    ca,
  );
  const ext = join(dir, `${prefix}-ext.cnf`);
  // servers are both sides of a route: the certificate serves and presents as a client
  writeFileSync(ext, 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n');
  return Array.from({ length: nodes }, (_, i) => {
    const key = join(dir, `${prefix}-${i}.key`);
    const csr = join(dir, `${prefix}-${i}.csr`);
    const cert = join(dir, `${prefix}-${i}.pem`);
    ssl('req', '-newkey', 'rsa:2048', '-nodes', '-subj', `/CN=${prefix}-${i}`, '-keyout', key, '-out', csr);
    ssl(
      'x509',
      '-req',
      '-in',
      csr,
      '-CA',
      ca,
      '-CAkey',
      caKey,
      '-CAcreateserial',
      '-days',
      '1',
      '-extfile',
      ext,
      '-out',
      cert,
    );
    return { certFile: cert, keyFile: key, caFile: ca };
  });
}
