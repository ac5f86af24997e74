import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { connect } from 'nats';
import { uniqueName } from '@freshet/testkit';
import { compileClusterConfig } from '../src/cluster-config.js';
import { startLocalCluster, type LocalCluster } from '../src/local-cluster.js';

// Embedded NATS with TLS: a throw-away CA and server certificate (openssl), actors that connect
// with the CA from their options, and clients without it refused.
const fake = fileURLToPath(new URL('./fixtures/fake-actor.mjs', import.meta.url));
let lc: LocalCluster;
let dir: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'freshet-tls-'));
  const ssl = (...args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: 'ignore' });
  ssl(
    'req',
    '-x509',
    '-newkey',
    'rsa:2048',
    '-nodes',
    '-keyout',
    'ca.key',
    '-out',
    'ca.pem',
    '-days',
    '1',
    '-subj',
    '/CN=freshet-test-ca',
  );
  ssl(
    'req',
    '-newkey',
    'rsa:2048',
    '-nodes',
    '-keyout',
    'server.key',
    '-out',
    'server.csr',
    '-subj',
    '/CN=127.0.0.1',
  );
  await writeFile(join(dir, 'ext.cnf'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\n');
  ssl(
    'x509',
    '-req',
    '-in',
    'server.csr',
    '-CA',
    'ca.pem',
    '-CAkey',
    'ca.key',
    '-CAcreateserial',
    '-out',
    'server.pem',
    '-days',
    '1',
    '-extfile',
    'ext.cnf',
  );
  const cfg = compileClusterConfig({
    cluster: uniqueName('tls'),
    dataDir: join(dir, 'data'),
    nats: {
      embedded: 1,
      tls: {
        certFile: join(dir, 'server.pem'),
        keyFile: join(dir, 'server.key'),
        caFile: join(dir, 'ca.pem'),
      },
    },
    shards: { count: 1 },
  });
  lc = await startLocalCluster(cfg, {
    nodeArgs: (p) => [fake, p.role, '--options-json', JSON.stringify(p.options)],
    stopGraceMs: 2000,
  });
});
afterAll(async () => {
  await lc?.stop();
});

describe('embedded NATS with TLS', () => {
  it('runs every actor over TLS and refuses clients that do not trust the CA', async () => {
    expect((await lc.actors()).map((a) => a.id)).toEqual(['shard-0', 'worker-0', 'serving-0']);
    expect(
      lc.processes.every(
        (p) => p.plan.options.nats && JSON.stringify(p.plan.options.nats).includes('ca.pem'),
      ),
    ).toBe(true);
    await expect(connect({ servers: lc.natsUrls[0]!, reconnect: false })).rejects.toThrow(/certificate|tls/i);
    const ok = await connect({ servers: lc.natsUrls[0]!, tls: { caFile: join(dir, 'ca.pem') } });
    expect(ok.info?.tls_required).toBe(true);
    await ok.close();
  });
});
