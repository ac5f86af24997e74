import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtemp, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Publisher, runReplay, SyntheticWorld } from '@freshet/client';
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
  it('writes private seed files and refuses anonymous clients', async () => {
    const st = await stat(join(dataDir, 'nats-auth', 'worker.nk'));
    expect(st.mode & 0o077).toBe(0);
    await expect(connectNats({ servers: lc.natsUrls[0]! }, 'anon')).rejects.toThrow(/auth/i);
  });

  it('learns from feedback with every role on its own least-privilege user', async () => {
    const as = (role: string) =>
      connectNats(
        {
          servers: lc.natsUrls[0]!,
          nkeySeedFile: join(dataDir, 'nats-auth', `${role}.nk`),
          inboxPrefix: subjects(lc.cluster).inboxPrefix(role),
        },
        role,
      );
    const pubNc = await as('publisher');
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
      // Labels: a publisher's example on a feedback subject is stored but dead-lettered by the
      // worker (FORBIDDEN_KIND); the labels subjects refuse it; a labeller's example is trained.
      const s = subjects(lc.cluster);
      const example = (id: string) =>
        JSON.stringify({
          v: 1,
          kind: 'example',
          id,
          ts: Date.now(),
          user: 'mallory',
          label: 1,
          features: { user: 'mallory' },
        });
      await pubNc.jetstream().publish(s.feedback(0), example(`x${start}`));
      await expect(
        pubNc.jetstream().publish(s.labels(0), example(`y${start}`), { timeout: 2000 }),
      ).rejects.toThrow(/Permissions Violation|timeout|no responders/i);
      const labNc = await as('labeller');
      try {
        await labNc.jetstream().publish(s.labels(0), example(`z${start}`));
      } finally {
        await labNc.close();
      }
      // `freshet replay` of a labelled dataset runs under the labeller's user (it may not
      // create or change the stream: --no-ensure, partitions read from the stream)
      const tsv = join(dataDir, 'criteo.tsv');
      const row = (i: number) =>
        [
          i % 2,
          ...Array.from({ length: 13 }, (_, k) => (i * k) % 9),
          ...Array.from({ length: 26 }, (_, k) => `c${(i + k) % 5}`),
        ].join('\t');
      await writeFile(tsv, Array.from({ length: 20 }, (_, i) => row(i)).join('\n') + '\n');
      const replayed = await runReplay({
        data: `criteo:${tsv}`,
        nats: { servers: lc.natsUrls[0]!, nkeySeedFile: join(dataDir, 'nats-auth', 'labeller.nk') },
        cluster: lc.cluster,
        ensure: false,
      });
      expect(replayed).toMatchObject({ events: 20, acked: 20, failed: 0, byKind: { example: 20 } });
    } finally {
      await pubNc.close();
    }
    const v = await waitFor(
      async () => {
        const view = clusterView(await lc.actors(), lc.cluster);
        const w = view.workers[0];
        const s = view.serving[0];
        return (w?.examples ?? 0) > 0 && (s?.version ?? 0) > 0 && w?.deadLetters?.FORBIDDEN_KIND === 1
          ? view
          : undefined;
      },
      {
        timeoutMs: 45_000,
        intervalMs: 250,
        message: () =>
          `worker examples and serving version > 0, one FORBIDDEN_KIND dead letter; output:\n${lc.processes.map((p) => `--- ${p.id}\n${p.output().slice(-1500)}`).join('\n')}`,
      },
    );
    expect(v.shards.reduce((a, s) => a + (s.version ?? 0), 0)).toBeGreaterThan(0);
    // An application ranks over NATS with the app role, which may do nothing else.
    const appNc = await as('app');
    try {
      const reply = await appNc.request(
        subjects(lc.cluster).rank,
        JSON.stringify({ user: 'u1', candidates: [{ item: 'a' }, { item: 'b' }] }),
        { timeout: 5000 },
      );
      const body = JSON.parse(new TextDecoder().decode(reply.data)) as { items: Array<{ item: string }> };
      expect(body.items.map((x) => x.item).sort()).toEqual(['a', 'b']);
      await expect(appNc.request(subjects(lc.cluster).feedback(0), '{}', { timeout: 2000 })).rejects.toThrow(
        /Permissions Violation/,
      );
    } finally {
      await appNc.close();
    }
    expect(v.shards.every((s) => s.rejects === 0)).toBe(true);
    // No role ran into a permission its work needs (they log NATS errors).
    for (const p of lc.processes) expect(p.output(), p.id).not.toMatch(/permission/i);
  });
});
