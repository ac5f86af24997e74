import { describe, expect, it } from 'vitest';
import { parseModelSpec, shardOfKey, type ModelSpec } from '@freshet/protocol';
import { Shard } from '@freshet/shard';
import { uniqueName, useNats } from '@freshet/testkit';
import { ShardClient } from '../src/shard-client.js';

const nats = useNats();
const SHARDS = 2;
const DIM = 4;
const STEP_TIMEOUT_MS = 300;

function modelSpec(policy: 'sync' | 'scale'): ModelSpec {
  return parseModelSpec({
    name: `sync-client-${policy}`,
    tables: [{ name: 'emb', dim: DIM, optimizer: { kind: 'adam', lr: 0.01 }, staleness: { policy } }],
  });
}

/** Keys of table 0 that all live on shard 0: a batch with nothing for shard 1. */
function keysOnShard0(n: number): Uint32Array {
  const out: number[] = [];
  for (let lo = 1; out.length < 2 * n; lo++) if (shardOfKey(0, lo, 0, SHARDS) === 0) out.push(lo, 0);
  return Uint32Array.from(out);
}

function client(cluster: string, spec: ModelSpec, worker: string): ShardClient {
  return new ShardClient(nats.nc, {
    cluster,
    shards: SHARDS,
    spec,
    worker,
    timeoutMs: 5000,
    retry: { attempts: 3, baseMs: 20, maxMs: 100 },
    denseCacheMaxLag: 0,
  });
}

describe('shard client under sync steps', () => {
  it('marks the step on a shard where its batch has no rows (an empty pull and push)', async () => {
    const keys = keysOnShard0(6);
    const batch = {
      size: 8,
      sparse: [{ table: 0, keys, counts: new Uint32Array(6).fill(1) }],
      denseTables: [],
    };
    // without sync the batch never talks to shard 1
    expect(
      client('c', modelSpec('scale'), 'w')
        .route(batch)
        .parts.map((p) => p.shard),
    ).toEqual([0]);

    const cluster = uniqueName('sync-client');
    const spec = modelSpec('sync');
    const shards = Array.from(
      { length: SHARDS },
      (_, shard) =>
        new Shard(
          {
            cluster,
            shard,
            shards: SHARDS,
            nats: { servers: nats.url },
            model: spec,
            limits: { syncStepTimeoutMs: STEP_TIMEOUT_MS },
          },
          { nc: nats.nc, log: () => undefined },
        ),
    );
    await Promise.all(shards.map((s) => s.start()));
    try {
      const a = client(cluster, spec, 'wa');
      const b = client(cluster, spec, 'wb');
      const step = async (c: ShardClient, id: string) => {
        const plan = c.route(batch);
        expect(plan.parts.map((p) => p.shard).sort()).toEqual([0, 1]);
        const pulled = await c.pull(plan, { clock: 0 });
        expect([...pulled.base.keys()].sort()).toEqual([0, 1]);
        const grads = [new Float32Array(6 * DIM).fill(0.1)];
        return c.push(plan, pulled, grads, { id, examples: batch.size });
      };
      for (let k = 0; k < 3; k++) {
        const t0 = performance.now();
        const [ra, rb] = await Promise.all([step(a, `a${k}`), step(b, `b${k}`)]);
        expect([...ra.accepted].sort()).toEqual([0, 1]);
        expect([...rb.accepted].sort()).toEqual([0, 1]);
        // after the first step, each closes as soon as both workers are in: on shard 1 too
        if (k > 0) expect(performance.now() - t0).toBeLessThan(STEP_TIMEOUT_MS);
      }
      for (const s of shards)
        expect(s.status().sync).toEqual({ steps: 3, pushes: 6, timeouts: 0, members: 2 });
      // shard 1 took empty steps: nothing to learn there, only the step marked
      expect(shards[1]!.core.rows).toBe(0);
      expect(shards[0]!.core.rows).toBe(6);
    } finally {
      await Promise.all(shards.map((s) => s.stop()));
    }
  });
});
