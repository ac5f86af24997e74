import { describe, expect, it } from 'vitest';
import { parseModelSpec, shardOfKey } from '@freshet/protocol';
import { Shard, type ShardOptionsInput } from '@freshet/shard';
import { uniqueName, useNats, useTempDirs } from '@freshet/testkit';
import { ShardClient } from '../src/shard-client.js';

const nats = useNats();
const tempDir = useTempDirs();
const SHARDS = 2;
const DIM = 4;
const spec = parseModelSpec({
  name: 'pull-sessions',
  tables: [
    { name: 'emb', dim: DIM, optimizer: { kind: 'adam', lr: 0.01 }, staleness: { policy: 'none' } },
    { name: 'mlp', kind: 'dense', dim: 6, optimizer: { kind: 'sgd', lr: 0.1 } },
  ],
});

/** 12 keys of table 0, some on each shard. */
function batch() {
  const keys = Uint32Array.from({ length: 24 }, (_, i) => (i % 2 === 0 ? 100 + i : 0));
  const owners = new Set(Array.from({ length: 12 }, (_, i) => shardOfKey(0, keys[2 * i]!, 0, SHARDS)));
  expect(owners.size).toBe(SHARDS);
  return { size: 16, sparse: [{ table: 0, keys, counts: new Uint32Array(12).fill(1) }], denseTables: [] };
}

function client(cluster: string, pullSessions: boolean): ShardClient {
  return new ShardClient(nats.nc, {
    cluster,
    shards: SHARDS,
    spec,
    worker: 'w',
    timeoutMs: 5000,
    retry: { attempts: 3, baseMs: 20, maxMs: 100 },
    denseCacheMaxLag: 0,
    pullSessions,
  });
}

describe('shard client with pull sessions', () => {
  it('pushes without keys, and with them again to a shard that lost the pull (restarted in between)', async () => {
    const cluster = uniqueName('sessions');
    const dirs = [tempDir('s0'), tempDir('s1')];
    const opts = (shard: number): ShardOptionsInput => ({
      cluster,
      shard,
      shards: SHARDS,
      nats: { servers: nats.url },
      model: spec,
      dataDir: dirs[shard]!,
      fsync: false,
    });
    const shards = [0, 1].map((i) => new Shard(opts(i), { nc: nats.nc, log: () => undefined }));
    await Promise.all(shards.map((s) => s.start()));
    try {
      const b = batch();
      const grads = [new Float32Array(12 * DIM).fill(0.1)];
      const c = client(cluster, true);
      const plan = c.route(b);
      const pulled = await c.pull(plan);
      expect([...pulled.sessions.keys()].sort()).toEqual([0, 1]);
      const first = await c.push(plan, pulled, grads, { id: 'b1', examples: b.size });
      expect([...first.accepted].sort()).toEqual([0, 1]);
      expect(c.requests).toMatchObject({ keylessPushes: 2, sessionMisses: 0 });
      for (const s of shards) expect(s.status().pullSessions).toMatchObject({ resolved: 1, sessions: 0 });

      // shard 0 restarts between the pull and the push: its sessions are gone
      const again = await c.pull(plan);
      await shards[0]!.stop();
      shards[0] = new Shard(opts(0), { nc: nats.nc, log: () => undefined });
      await shards[0].start();
      const second = await c.push(plan, again, grads, { id: 'b2', examples: b.size });
      expect([...second.accepted].sort()).toEqual([0, 1]);
      expect(c.requests).toMatchObject({ keylessPushes: 4, sessionMisses: 1 });
      expect(shards[0].status().pullSessions).toMatchObject({ unknown: 1, resolved: 0 });
      expect(shards[1]!.status().pullSessions).toMatchObject({ resolved: 2 });
      // the restarted shard logged the push it got with keys: a restore has both pushes
      const rows0 = shards[0].core.pull({
        tables: [{ t: 0, keys: plan.parts.find((p) => p.shard === 0)!.tables[0]!.keys }],
      });
      const restored = new Shard(
        { ...opts(0), cluster: uniqueName('replay') },
        { nc: nats.nc, log: () => undefined },
      );
      await restored.start();
      try {
        expect(shards[0].core.version).toBe(2);
        expect(restored.core.version).toBe(2);
        expect(
          Array.from(
            restored.core.pull({
              tables: [{ t: 0, keys: plan.parts.find((p) => p.shard === 0)!.tables[0]!.keys }],
            }).tables[0]!.values,
          ),
        ).toEqual(Array.from(rows0.tables[0]!.values));
      } finally {
        await restored.stop();
      }

      // a batch with only the dense tensor: nothing to leave out, but the push still names its
      // pull, so the shard lets the session go at once
      const denseOnly = { size: 4, sparse: [], denseTables: [1] };
      const dplan = c.route(denseOnly);
      const dpulled = await c.pull(dplan);
      expect(dpulled.sessions.size).toBe(1);
      await c.push(dplan, dpulled, [undefined, new Float32Array(6).fill(0.1)], { id: 'd1', examples: 4 });
      expect(c.requests.keylessPushes).toBe(4);
      for (const s of shards) expect(s.status().pullSessions!.sessions).toBe(0);

      // off: keys every time, and nothing kept on the shards for it
      const plain = client(cluster, false);
      const p3 = await plain.pull(plan);
      expect(p3.sessions.size).toBe(0);
      await plain.push(plan, p3, grads, { id: 'b3', examples: b.size });
      expect(plain.requests).toMatchObject({ keylessPushes: 0, sessionMisses: 0 });
    } finally {
      await Promise.all(shards.map((s) => s.stop()));
    }
  });
});
