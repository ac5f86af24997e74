import { describe, expect, it } from 'vitest';
import { uniqueName, useNats } from '@freshet/testkit';
import { kvKeys } from '../src/kv-keys.js';

const nats = useNats();

/**
 * Manifest recovery lists one partition's slots (`mf.<p>.*`) while other partitions' listings
 * run; `kv.keys()` then returned 1 of 2 keys per partition on nats-server 2.9 (its ordered
 * consumer stops at the first message that reports nothing pending), and a copy never listed is
 * never recovered.
 */
describe('kvKeys', () => {
  it('lists every key of a filter while other listings and writes run, deleted keys included', async () => {
    const js = nats.nc.jetstream();
    const jsm = await nats.nc.jetstreamManager();
    const bucket = uniqueName('kvk').replace(/[^A-Za-z0-9_-]/g, '');
    const kv = await js.views.kv(bucket, { history: 1 });
    // slots of four partitions written in turn, as a worker's mixed batches write them
    for (let slot = 0; slot < 3; slot++) for (let p = 0; p < 4; p++) await kv.put(`mf.${p}.${slot}`, 'm');
    await kv.delete('mf.3.2');
    const listed = await Promise.all(
      [0, 1, 2, 3].map(async (p) => {
        await kv.put(`mfe.${p}`, 'epoch');
        const keys = await kvKeys(jsm, bucket, `mf.${p}.*`);
        for (const k of keys) await kv.get(k);
        return keys;
      }),
    );
    expect(listed).toEqual([0, 1, 2, 3].map((p) => [0, 1, 2].map((slot) => `mf.${p}.${slot}`)));
    expect((await kv.get('mf.3.2'))?.operation).toBe('DEL');
    expect(await kvKeys(jsm, bucket, 'none.*')).toEqual([]);
  });
});
