import { describe, expect, it } from 'vitest';
import { requestBytes } from '@freshet/nats';
import {
  decodeDelta,
  decodePushReply,
  encodePush,
  FreshetError,
  subjects,
  type Delta,
} from '@freshet/protocol';
import { embeddingModel, onePush, uniqueName, useNats } from '@freshet/testkit';
import { compileShardOptions, deltaIntervalOf } from '../src/shard-options.js';
import { aligned, startShard } from '../src/shard.js';

const nats = useNats();

const model = embeddingModel('m');
const push = (id: string, key: number) => onePush(id, key, { worker: 'w1' });

describe('delta interval sized by the shard count', () => {
  const base = { cluster: 'c', shard: 0, model };

  it('is shards / budget seconds, between deltaIntervalMs and deltaMaxIntervalMs', () => {
    const of = (o: Record<string, number>) =>
      deltaIntervalOf(compileShardOptions({ ...base, shards: 1, ...o }));
    expect(of({ shards: 2 })).toBe(5);
    // 40 shards, 400 messages/s per serving node: each shard every 100 ms
    expect(of({ shards: 40, deltaMsgsPerServingNode: 400 })).toBe(100);
    // few shards: never more often than deltaIntervalMs
    expect(of({ shards: 2, deltaMsgsPerServingNode: 20_000 })).toBe(5);
    // many: never less often than the freshness bound
    expect(of({ shards: 1000, deltaMsgsPerServingNode: 1000 })).toBe(250);
    expect(of({ shards: 1000, deltaMsgsPerServingNode: 1000, deltaMaxIntervalMs: 50 })).toBe(50);
    expect(() => compileShardOptions({ ...base, shards: 2, deltaMsgsPerServingNode: 0 })).toThrow(
      FreshetError,
    );
  });

  it('with servingSlices counts the shards one sliced serving node hears: ceil(shards / slices)', () => {
    const of = (o: Record<string, number>) =>
      deltaIntervalOf(compileShardOptions({ ...base, shards: 1, ...o }));
    expect(compileShardOptions({ ...base, shards: 2 }).servingSlices).toBe(1);
    // 40 shards in 2 slices: a node hears 20, each shard every 50 ms (100 ms unsliced)
    expect(of({ shards: 40, deltaMsgsPerServingNode: 400, servingSlices: 2 })).toBe(50);
    // 41 in 2: the larger slice holds 21
    expect(of({ shards: 41, deltaMsgsPerServingNode: 400, servingSlices: 2 })).toBe(52.5);
    // no budget: the slices change nothing
    expect(of({ shards: 40, servingSlices: 4 })).toBe(5);
    // pure function callers may leave it out (the whole model)
    expect(
      deltaIntervalOf({
        shards: 40,
        deltaIntervalMs: 5,
        deltaMsgsPerServingNode: 400,
        deltaMaxIntervalMs: 250,
      }),
    ).toBe(100);
    for (const bad of [0, 1.5, 4097])
      expect(() => compileShardOptions({ ...base, shards: 2, servingSlices: bad })).toThrow(/servingSlices/);
  });

  it('a shard of 40 with a budget of 400/s publishes about every 100 ms under steady pushes; control: every 5 ms', async () => {
    const counts: number[] = [];
    for (const budget of [400, undefined]) {
      const cluster = uniqueName('di');
      const s = subjects(cluster);
      const deltas: Delta[] = [];
      const sub = nats.nc.subscribe(s.delta(0), {
        callback: (_e, m) => deltas.push(decodeDelta(aligned(m.data))),
      });
      const shard = await startShard(
        {
          cluster,
          shard: 0,
          shards: 40,
          model,
          checkOwnership: false,
          ...(budget !== undefined ? { deltaMsgsPerServingNode: budget } : {}),
        },
        { nc: nats.nc, log: () => undefined },
      );
      try {
        // a push every 10 ms for 1.5 s: a change waiting at every tick of either interval
        const t0 = Date.now();
        let i = 0;
        while (Date.now() - t0 < 1500) {
          const reply = decodePushReply(
            aligned(await requestBytes(nats.nc, s.push(0), encodePush(push(`p${i}`, i + 1)))),
          );
          expect(reply.applied).toBe(1);
          i++;
          await new Promise((r) => setTimeout(r, 10));
        }
        await new Promise((r) => setTimeout(r, 150));
        // nothing lost: every pushed key is in some delta
        const keys = new Set(
          deltas.flatMap((d) => Array.from(d.tables[0]?.keys ?? []).filter((_, j) => j % 2 === 0)),
        );
        expect(keys.size).toBe(i);
        counts.push(deltas.length);
      } finally {
        sub.unsubscribe();
        await shard.stop();
      }
    }
    const [sized, control] = counts as [number, number];
    // 1.5 s at 100 ms: ~15 (timer jitter on a shared machine: a few either way)
    expect(sized).toBeGreaterThanOrEqual(8);
    expect(sized).toBeLessThanOrEqual(20);
    // at 5 ms every 10 ms push gets its own delta: ~150 on a quiet machine
    expect(control).toBeGreaterThan(3 * sized);
  });
});
