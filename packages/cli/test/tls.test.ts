import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { connect } from 'nats';
import { issueRouteCerts } from '@freshet/nats';
import { uniqueName } from '@freshet/testkit';
import { compileClusterConfig } from '../src/cluster-config.js';
import { startLocalCluster, type LocalCluster } from '../src/local-cluster.js';

// Embedded NATS with TLS: a throw-away CA and server certificate, actors that connect
// with the CA from their options, and clients without it refused.
const fake = fileURLToPath(new URL('./fixtures/fake-actor.mjs', import.meta.url));
let lc: LocalCluster;
let dir: string;
let ca: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'freshet-tls-'));
  // a server certificate for 127.0.0.1 from a throw-away CA, as route certificates are made
  const made = issueRouteCerts(dir, { hosts: ['127.0.0.1', 'localhost'], days: 1, prefix: 'server' });
  ca = made.caFile;
  const cfg = compileClusterConfig({
    cluster: uniqueName('tls'),
    dataDir: join(dir, 'data'),
    nats: {
      embedded: 1,
      tls: {
        certFile: made.nodes[0]!.certFile,
        keyFile: made.nodes[0]!.keyFile,
        caFile: ca,
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
      lc.processes.every((p) => p.plan.options.nats && JSON.stringify(p.plan.options.nats).includes(ca)),
    ).toBe(true);
    await expect(connect({ servers: lc.natsUrls[0]!, reconnect: false })).rejects.toThrow(/certificate|tls/i);
    const ok = await connect({ servers: lc.natsUrls[0]!, tls: { caFile: ca } });
    expect(ok.info?.tls_required).toBe(true);
    await ok.close();
  });
});
