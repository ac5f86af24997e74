import { join } from 'node:path';
import type { KV } from 'nats';
import { describe, expect, it } from 'vitest';
import { readPlacement, writePlacement } from '@freshet/nats';
import { parseModelSpec } from '@freshet/protocol';
import { Shard, ShardHost } from '@freshet/shard';
import {
  embeddingModel,
  keysOnEveryShard,
  placeShardsInKv,
  uniqueName,
  useNats,
  useTempDirs,
  waitFor,
} from '@freshet/testkit';
import { adaptiveLingerMs, HostRouter, MAX_LINGER_MS } from '../src/host-router.js';
import { ShardClient } from '../src/shard-client.js';

const nats = useNats();
const tempDir = useTempDirs();
const SHARDS = 4;
const DIM = 4;
const model = embeddingModel('host-routing', { dim: DIM });
const spec = parseModelSpec(model);
const quiet = () => undefined;

const batch = () => keysOnEveryShard(40, SHARDS, { size: 64 });

/** A router following the placement in `kv`, once it routes `shard` through `host`. */
async function startRouter(cluster: string, kv: KV, shard: number, host: string, lingerMs = 0) {
  const r = new HostRouter(nats.nc, {
    cluster,
    timeoutMs: 3000,
    maxMessageBytes: 1 << 20,
    cooldownMs: 60_000,
    lingerMs,
  });
  await r.start(kv);
  await waitFor(() => r.hostOf(shard) === host, { timeoutMs: 5000 });
  return r;
}

/** A shard host running the shards the placement gives `host`. */
function shardHost(cluster: string, host: string, dir: string, pollMs: number): ShardHost {
  return new ShardHost(
    {
      cluster,
      host,
      nats: { servers: nats.url },
      dataDir: join(dir, host),
      pollMs,
      shard: { model, fsync: false, checkpointIntervalMs: 0 },
    },
    { log: quiet },
  );
}

function client(cluster: string, router?: HostRouter, pullSessions = false): ShardClient {
  return new ShardClient(nats.nc, {
    cluster,
    shards: SHARDS,
    spec,
    worker: 'w',
    timeoutMs: 3000,
    retry: { attempts: 3, baseMs: 20, maxMs: 100 },
    denseCacheMaxLag: 0,
    pullSessions,
    router,
  });
}

describe('adaptive linger', () => {
  it('grows with the workers to keep a host under its message budget, between the floor and 250 ms', () => {
    // each busy worker sends a host a pull and a push message per window
    expect(adaptiveLingerMs(10, 20_000)).toBe(1);
    expect(adaptiveLingerMs(1000, 20_000)).toBe(100);
    expect((2 * 1000 * 1000) / adaptiveLingerMs(1000, 20_000)).toBe(20_000);
    expect(adaptiveLingerMs(10_000, 20_000)).toBe(MAX_LINGER_MS);
    expect(adaptiveLingerMs(10, 20_000, 30)).toBe(30);
    expect(adaptiveLingerMs(0, 20_000)).toBe(adaptiveLingerMs(1, 20_000));
  });
});

describe('host routing', () => {
  it("sends a batch's pulls and pushes to one host's shards as one message each, and falls back to each shard", async () => {
    const cluster = uniqueName('hostroute').replace(/[^A-Za-z0-9_-]/g, '');
    // shards 0, 1 on host h0; 2, 3 placed on host "old", which runs them as standalone shards
    // (a host that answers no host messages: older, or not a shard host at all)
    const kv = await placeShardsInKv(nats.nc, cluster, ['h0', 'h0', 'old', 'old']);
    const dir = tempDir('hosts');
    // it does not follow later placement changes within the test
    const host = shardHost(cluster, 'h0', dir, 600_000);
    const standalone = [2, 3].map(
      (shard) =>
        new Shard(
          {
            cluster,
            shard,
            shards: SHARDS,
            nats: { servers: nats.url },
            model,
            dataDir: join(dir, `s${shard}`),
            fsync: false,
          },
          { nc: nats.nc, log: quiet },
        ),
    );
    await Promise.all([host.start(), ...standalone.map((x) => x.start())]);
    const router = await startRouter(cluster, kv, 3, 'old');
    try {
      expect([...host.shards.keys()].sort()).toEqual([0, 1]);
      expect(router.hostOf(0)).toBe('h0');
      const b = batch();
      const routed = client(cluster, router);
      const plan = routed.route(b);
      const pulled = await routed.pull(plan);
      // h0's two shards in one host message; "old" had no responders: its two go directly
      expect(router.stats).toMatchObject({
        hostMessages: 2,
        hostParts: 4,
        hostFailures: 1,
        direct: 2,
        notHere: 0,
      });
      expect(router.hostOf(2)).toBeUndefined(); // cooling down: asked directly

      // the same rows as a client asking each shard itself
      const direct = client(cluster);
      const plain = await direct.pull(direct.route(b));
      expect(pulled.rows[0]).toEqual(plain.rows[0]);

      const grads = [new Float32Array(40 * DIM).fill(0.25)];
      const out = await routed.push(plan, pulled, grads, { id: 'b1', examples: b.size });
      expect([...out.accepted].sort()).toEqual([0, 1, 2, 3]);
      expect(out.duplicates).toBe(0);
      expect(router.stats).toMatchObject({ hostMessages: 3, hostParts: 6, direct: 4 });
      const versions = () =>
        [0, 1, 2, 3].map((i) => (host.shards.get(i) ?? standalone[i - 2]!).status().version);
      expect(versions()).toEqual([1, 1, 1, 1]);
      // a retry of the same push through the host is a duplicate, applied once
      const again = await routed.push(plan, pulled, grads, { id: 'b1', examples: b.size });
      expect(again.duplicates).toBe(SHARDS);
      expect(versions()).toEqual([1, 1, 1, 1]);
      const after = await direct.pull(direct.route(b));
      expect(after.rows[0]).not.toEqual(plain.rows[0]);

      // every shard placed on h0 now, but h0 runs only 0 and 1 (it has not acted on the change):
      // it answers for those and says the others are not there, which are then asked directly
      const cur = (await readPlacement(kv))!;
      await writePlacement(kv, { epoch: 2, hosts: ['h0', 'h0', 'h0', 'h0'], at: Date.now() }, cur.revision);
      await waitFor(() => router.hostOf(3) === 'h0', { timeoutMs: 5000 });
      const before = { ...router.stats };
      const third = await routed.pull(plan);
      expect(router.stats.hostMessages - before.hostMessages).toBe(1);
      expect(router.stats.hostParts - before.hostParts).toBe(SHARDS);
      expect(router.stats.notHere - before.notHere).toBe(2);
      expect(router.stats.direct - before.direct).toBe(2);
      expect(third.rows[0]).toEqual(after.rows[0]);
      expect([...third.base.values()]).toEqual([1, 1, 1, 1]);
    } finally {
      await router.stop();
      await host.stop();
      await Promise.all(standalone.map((x) => x.stop()));
    }
  });

  it('carries pulls of several batches sent together in one host message per host', async () => {
    const cluster = uniqueName('hostcoal').replace(/[^A-Za-z0-9_-]/g, '');
    const kv = await placeShardsInKv(nats.nc, cluster, ['a', 'a', 'b', 'b']);
    const dir = tempDir('coal');
    const hosts = ['a', 'b'].map((h) => shardHost(cluster, h, dir, 50));
    await Promise.all(hosts.map((h) => h.start()));
    const router = await startRouter(cluster, kv, 3, 'b');
    try {
      const c = client(cluster, router, true);
      const plan = c.route(batch());
      // three batches' pulls issued in one turn: 12 shard requests in 2 messages
      const pulls = await Promise.all([c.pull(plan), c.pull(plan), c.pull(plan)]);
      expect(router.stats).toMatchObject({ hostMessages: 2, hostParts: 12, direct: 0, hostFailures: 0 });
      expect(pulls[1]!.rows[0]).toEqual(pulls[0]!.rows[0]);
      // every shard got its three pulls (it holds each one's keys for the push)
      for (const h of hosts)
        for (const sh of h.shards.values()) expect(sh.status().pullSessions?.sessions).toBe(3);

      // a linger chosen as each window opens (the worker's hostMsgsPerS), reported in stats
      let asked = 0;
      const adaptive = new HostRouter(nats.nc, {
        cluster,
        timeoutMs: 3000,
        maxMessageBytes: 1 << 20,
        cooldownMs: 60_000,
        linger: () => (++asked === 1 ? 150 : 0),
      });
      await adaptive.start(kv);
      try {
        await waitFor(() => adaptive.hostOf(3) === 'b', { timeoutMs: 5000 });
        const a = client(cluster, adaptive);
        const first = a.pull(plan);
        await new Promise((r) => setTimeout(r, 5));
        await Promise.all([first, a.pull(plan)]);
        expect(adaptive.stats).toMatchObject({ hostMessages: 2, hostParts: 8, lingerMs: 150 });
        // the next window asks again: 0, this turn only
        const next = a.pull(plan);
        await new Promise((r) => setTimeout(r, 5));
        await Promise.all([next, a.pull(plan)]);
        expect(adaptive.stats).toMatchObject({ hostMessages: 6, hostParts: 16, lingerMs: 0 });
        expect(asked).toBe(3);
      } finally {
        await adaptive.stop();
      }

      // batches sent a little apart travel together when host messages linger for them
      const lingering = await startRouter(cluster, kv, 3, 'b', 150);
      try {
        const l = client(cluster, lingering);
        const first = l.pull(plan);
        await new Promise((r) => setTimeout(r, 5));
        await Promise.all([first, l.pull(plan)]);
        expect(lingering.stats).toMatchObject({ hostMessages: 2, hostParts: 8, direct: 0 });
        // batches in flight interleave pulls and pushes: a window keeps one pull and one push
        // message per host, the pushes sent first, so the pull issued after the push reads it
        const b0 = await l.pull(plan);
        const before = { ...lingering.stats };
        const pushed = l.push(plan, b0, [new Float32Array(b0.rows[0]!.length).fill(0.5)], {
          id: 'interleaved',
          examples: 64,
        });
        await new Promise((r) => setTimeout(r, 5));
        const next = l.pull(plan);
        await new Promise((r) => setTimeout(r, 5));
        const third = l.pull(plan);
        expect((await pushed).accepted.size).toBe(SHARDS);
        const [after, last] = await Promise.all([next, third]);
        expect(lingering.stats.hostMessages - before.hostMessages).toBe(4);
        expect(lingering.stats.hostParts - before.hostParts).toBe(12);
        expect(Array.from(after.rows[0]!)).not.toEqual(Array.from(b0.rows[0]!));
        expect(Array.from(last.rows[0]!)).toEqual(Array.from(after.rows[0]!));
        for (const [shard, v] of b0.base) expect(after.base.get(shard)).toBeGreaterThan(v);
      } finally {
        await lingering.stop();
      }
    } finally {
      await router.stop();
      await Promise.all(hosts.map((h) => h.stop()));
    }
  });
});
