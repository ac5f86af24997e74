import { readFileSync } from 'node:fs';
import { checkServerIdentity, type PeerCertificate } from 'node:tls';
import { connect, nkeyAuthenticator, type NatsConnection, type TlsOptions } from 'nats';

/**
 * A NATS connection from the test process (root namespace) to servers on netns hosts that speak
 * TLS with certificates for their cluster names (`nats-0.nats`): the test cannot resolve those
 * names, so it dials addresses and accepts a certificate from the cluster's CA that carries one
 * of the servers' names (nats.js hides which address a handshake is for). Chain and name are
 * both verified.
 */
export interface NetnsNatsOptions {
  /** Client URLs by address (`nats://10.x.y.z:4222`). */
  servers: string[];
  /** The names the servers' certificates carry (any one must match). */
  names: string[];
  caFile: string;
  user?: string;
  pass?: string;
  nkeySeedFile?: string;
  inboxPrefix?: string;
  name: string;
}

export async function connectNetnsNats(o: NetnsNatsOptions): Promise<NatsConnection> {
  return connect({
    servers: o.servers,
    name: o.name,
    maxReconnectAttempts: -1,
    reconnectTimeWait: 250,
    ...(o.user !== undefined ? { user: o.user, pass: o.pass ?? '' } : {}),
    ...(o.nkeySeedFile
      ? {
          authenticator: nkeyAuthenticator(
            new TextEncoder().encode(readFileSync(o.nkeySeedFile, 'utf8').trim()),
          ),
        }
      : {}),
    ...(o.inboxPrefix !== undefined ? { inboxPrefix: o.inboxPrefix } : {}),
    tls: {
      ca: readFileSync(o.caFile, 'utf8'),
      // node's own check, against the servers' names
      checkServerIdentity: (_host: string, cert: PeerCertificate) => {
        const errors = o.names.map((n) => checkServerIdentity(n, cert));
        return errors.some((e) => e === undefined) ? undefined : errors[0];
      },
      // nats.js hands its tls options to tls.connect as they are
    } as TlsOptions,
  });
}
