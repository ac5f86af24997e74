import { describe, expect, it } from 'vitest';
import { parseModelSpec } from '@freshet/protocol';
import { Shard } from '@freshet/shard';
import { uniqueName, useNats } from '@freshet/testkit';
import { ShardClient } from '../src/shard-client.js';

const nats = useNats();
const spec = parseModelSpec({
  name: 'int8-pull',
  tables: [
    { name: 'emb', dim: 16, init: { kind: 'normal', std: 0.1, seed: 3 } },
    { name: 'wide', dim: 1, init: { kind: 'normal', std: 0.1, seed: 4 } },
  ],
});

describe('shard client with int8Pull', () => {
  it('gets wide rows within half a step of their float32 values and narrow ones as binary16', async () => {
    const cluster = uniqueName('int8');
    const shard = new Shard(
      { cluster, shard: 0, shards: 1, nats: { servers: nats.url }, model: spec },
      { nc: nats.nc, log: () => undefined },
    );
    await shard.start();
    try {
      const keys = Uint32Array.from({ length: 40 }, (_, i) => (i % 2 === 0 ? 7 + i : 0));
      const counts = new Uint32Array(20).fill(1);
      const batch = {
        size: 20,
        sparse: [
          { table: 0, keys, counts },
          { table: 1, keys, counts },
        ],
        denseTables: [],
      };
      const client = (int8Pull: boolean) =>
        new ShardClient(nats.nc, {
          cluster,
          shards: 1,
          spec,
          worker: 'w',
          timeoutMs: 5000,
          retry: { attempts: 2, baseMs: 10, maxMs: 50 },
          denseCacheMaxLag: 0,
          int8Pull,
        });
      const plain = client(false);
      const full = await plain.pull(plain.route(batch));
      const q = client(true);
      const small = await q.pull(q.route(batch));
      const a = full.rows[0]!;
      const b = small.rows[0]!;
      let rounded = 0;
      for (let r = 0; r < 20; r++) {
        const row = a.subarray(r * 16, (r + 1) * 16);
        const step = Math.max(...Array.from(row, Math.abs)) / 127;
        for (let j = 0; j < 16; j++) {
          const d = Math.abs(b[r * 16 + j]! - row[j]!);
          expect(d).toBeLessThanOrEqual(step * 0.51);
          if (d > 0) rounded++;
        }
      }
      expect(rounded).toBeGreaterThan(100); // int8 really travelled
      // dim 1: binary16, 11 significant bits
      full.rows[1]!.forEach((v, i) =>
        expect(Math.abs(small.rows[1]![i]! - v)).toBeLessThanOrEqual(Math.abs(v) * 2 ** -11),
      );
    } finally {
      await shard.stop();
    }
  });
});
