import { execFileSync } from 'node:child_process';
import { chmodSync, rmSync, writeFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { join } from 'node:path';
import { FreshetError } from '@freshet/protocol';
import type { RouteTls } from './local-server.js';

/** Options of {@link issueRouteCerts}. */
export interface RouteCertOptions {
  /** Names the peers dial (DNS names or IP addresses): every certificate carries them all. */
  hosts: string[];
  /** Certificates to issue from the one CA (default 1: one certificate all nodes share). */
  nodes?: number;
  /** Validity in days (default 825, the longest that TLS clients accept). */
  days?: number;
  /** File name prefix, so several sets can share a directory (default `route`). */
  prefix?: string;
}

/** A CA, its key (keep it to issue more certificates; the servers never need it) and the nodes' certificates. */
export interface RouteCerts {
  caFile: string;
  caKeyFile: string;
  nodes: RouteTls[];
}

/**
 * Makes a CA and certificates for mutual TLS on NATS routes with the `openssl` command: RSA 2048,
 * subjectAltName = every host, usable as server and client (a route connection is both). Keys are
 * written 0600. Route TLS needs no public CA: only the cluster's own servers must trust each other.
 */
export function issueRouteCerts(dir: string, o: RouteCertOptions): RouteCerts {
  if (o.hosts.length === 0) throw new FreshetError('CONFIG', 'route certificates need at least one host');
  const prefix = o.prefix ?? 'route';
  const days = String(o.days ?? 825);
  const ssl = (...args: string[]) => {
    try {
      execFileSync('openssl', args, { stdio: 'pipe' });
    } catch (e) {
      const err = e as NodeJS.ErrnoException & { stderr?: Buffer };
      if (err.code === 'ENOENT') {
        throw new FreshetError(
          'CONFIG',
          'route TLS certificates are made with the openssl command: install it',
        );
      }
      throw new FreshetError(
        'CONFIG',
        `openssl ${args[0]} failed: ${err.stderr?.toString().trim() ?? err.message}`,
      );
    }
  };
  const caFile = join(dir, `${prefix}-ca.pem`);
  const caKeyFile = join(dir, `${prefix}-ca.key`);
  ssl(
    'req',
    '-x509',
    '-newkey',
    'rsa:2048',
    '-nodes',
    '-days',
    days,
    '-subj',
    `/CN=${prefix} CA`,
    '-keyout',
    caKeyFile,
    '-out',
    caFile,
  );
  chmodSync(caKeyFile, 0o600);
  const san = o.hosts.map((h) => (isIP(h) ? `IP:${h}` : `DNS:${h}`)).join(',');
  const ext = join(dir, `${prefix}-ext.cnf`);
  writeFileSync(ext, `subjectAltName=${san}\nextendedKeyUsage=serverAuth,clientAuth\n`);
  const count = o.nodes ?? 1;
  const nodes = Array.from({ length: count }, (_, i) => {
    const name = count === 1 ? prefix : `${prefix}-${i}`;
    const keyFile = join(dir, `${name}.key`);
    const csr = join(dir, `${name}.csr`);
    const certFile = join(dir, `${name}.pem`);
    ssl('req', '-newkey', 'rsa:2048', '-nodes', '-subj', `/CN=${name}`, '-keyout', keyFile, '-out', csr);
    chmodSync(keyFile, 0o600);
    ssl(
      'x509',
      '-req',
      '-in',
      csr,
      '-CA',
      caFile,
      '-CAkey',
      caKeyFile,
      '-CAcreateserial',
      '-days',
      days,
      '-extfile',
      ext,
      '-out',
      certFile,
    );
    rmSync(csr);
    return { certFile, keyFile, caFile };
  });
  rmSync(ext);
  return { caFile, caKeyFile, nodes };
}
