import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtemp, readFile, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Publisher, SyntheticWorld } from '@freshet/client';
import { compileClusterConfig, startLocalCluster, clusterView, type LocalCluster } from '@freshet/cli';
import { connectNats } from '@freshet/nats';
import { subjects } from '@freshet/protocol';
import { uniqueName, waitFor } from '@freshet/testkit';

// A local cluster whose embedded nats-server enforces the generated per-role permissions, with the
// real shard, worker and serving processes. Load: 300 synthetic requests (5 impressions each plus
// clicks) published with the publisher role's credentials. It counts that the worker learned
// (examples > 0) and the serving node applied deltas (version > 0): every role did its work
// through its least-privilege user, so the permissions are not too tight; the publisher's
// denials (pushing gradients, reading streams, admin commands) are in packages/cli/test/nats-auth.test.ts.
let lc: LocalCluster;
let dataDir: string;

beforeAll(async () => {
  dataDir = await mkdtemp(join(tmpdir(), 'freshet-auth-'));
  const cfg = compileClusterConfig({
    cluster: uniqueName('auth'),
    dataDir,
    partitions: 2,
    nats: { embedded: 1, auth: { generate: true } },
    shards: { count: 2 },
    workers: {
      count: 1,
      options: {
        compute: { threads: 1 },
        batch: { size: 64, maxWaitMs: 20 },
        joiner: { windowMs: 300, orphanWaitMs: 300 },
      },
    },
    serving: { count: 1 },
  });
  lc = await startLocalCluster(cfg, { stopGraceMs: 5000, readyTimeoutMs: 90_000 });
}, 120_000);
afterAll(async () => {
  await lc?.stop();
});

describe('local cluster with generated NATS auth (real roles)', () => {
  it('writes private password files and refuses anonymous clients', async () => {
    const st = await stat(join(dataDir, 'nats-auth', 'worker.pass'));
    expect(st.mode & 0o077).toBe(0);
    await expect(connectNats({ servers: lc.natsUrls[0]! }, 'anon')).rejects.toThrow(/auth/i);
  });

  it('learns from feedback with every role on its own least-privilege user', async () => {
    const password = (await readFile(join(dataDir, 'nats-auth', 'publisher.pass'), 'utf8')).trim();
    const pubNc = await connectNats(
      { servers: lc.natsUrls[0]!, user: `freshet-${lc.cluster}-publisher`, pass: password },
      'publisher',
    );
    try {
      const start = Date.now();
      const world = new SyntheticWorld({
        seed: 3,
        requests: 300,
        startTs: start,
        intervalMs: 2,
        idPrefix: `a${start}`,
      });
      const pub = new Publisher(pubNc, { cluster: lc.cluster, partitions: 2 });
      for (const ev of world.events()) await pub.publish(ev);
      const stats = await pub.close();
      expect(stats.acked).toBeGreaterThan(300);
      // The publisher cannot pull parameters either.
      await expect(
        pubNc.request(subjects(lc.cluster).pull(0), new Uint8Array(8), { timeout: 2000 }),
      ).rejects.toThrow(/Permissions Violation/);
    } finally {
      await pubNc.close();
    }
    const v = await waitFor(
      async () => {
        const view = clusterView(await lc.actors(), lc.cluster);
        const w = view.workers[0];
        const s = view.serving[0];
        return (w?.examples ?? 0) > 0 && (s?.version ?? 0) > 0 ? view : undefined;
      },
      {
        timeoutMs: 45_000,
        intervalMs: 250,
        message: () =>
          `worker examples and serving version > 0; output:\n${lc.processes.map((p) => `--- ${p.id}\n${p.output().slice(-1500)}`).join('\n')}`,
      },
    );
    expect(v.shards.reduce((a, s) => a + (s.version ?? 0), 0)).toBeGreaterThan(0);
    expect(v.shards.every((s) => s.rejects === 0)).toBe(true);
    // No role ran into a permission its work needs (they log NATS errors).
    for (const p of lc.processes) expect(p.output(), p.id).not.toMatch(/permission/i);
  });
});
