import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { requestBytes } from '@freshet/nats';
import { decodePullReply, decodePushReply, encodePull, encodePush, subjects } from '@freshet/protocol';
import { uniqueName, useNats } from '@freshet/testkit';
import { Shard } from '../src/shard.js';
import { TauHistogram } from '../src/staleness.js';

const nats = useNats();
const dataDir = mkdtempSync(join(tmpdir(), 'freshet-reload-'));
afterAll(() => rmSync(dataDir, { recursive: true, force: true }));

const DIM = 4;
const model = {
  name: 'reload',
  tables: [{ name: 'emb', dim: DIM, optimizer: { kind: 'sgd', lr: 0.5 }, staleness: { policy: 'none' } }],
};
const keys = new Uint32Array([1, 0, 2, 0, 3, 0]);

describe('TauHistogram.buckets', () => {
  it('counts each record once, under the first bound at or above it', () => {
    const h = new TauHistogram();
    for (const t of [0, 0, 1, 3, 3, 3, 100, 200, 5000]) h.record(t);
    const { bounds, counts } = h.buckets([0, 1, 2, 4, 128, 1024]);
    expect(bounds).toEqual([0, 1, 2, 4, 128, 1024]);
    expect(counts).toEqual([2, 1, 0, 3, 1, 1, 1]);
    expect(counts.reduce((a, b) => a + b, 0)).toBe(h.count);
  });
});

describe('Shard.reload', () => {
  it('reloads checkpoint + log while running: same version and rows, serving again', async () => {
    const cluster = uniqueName('reload');
    const s = subjects(cluster);
    const shard = new Shard(
      { cluster, shard: 0, shards: 1, nats: { servers: nats.url }, model, dataDir, checkpointIntervalMs: 0 },
      { nc: nats.nc, log: () => undefined },
    );
    await shard.start();
    try {
      const push = async (i: number) =>
        decodePushReply(
          await requestBytes(
            nats.nc,
            s.push(0),
            encodePush({
              id: `p${i}`,
              worker: 'w',
              clock: i,
              base: Math.max(0, i - 3),
              tables: [
                {
                  t: 0,
                  dim: DIM,
                  keys,
                  grads: new Float32Array(3 * DIM).fill(0.1 * (i + 1)),
                  counts: new Uint32Array(3).fill(1),
                },
              ],
            }),
          ),
        );
      const pull = async () =>
        decodePullReply(await requestBytes(nats.nc, s.pull(0), encodePull({ tables: [{ t: 0, keys }] })));
      for (let i = 0; i < 5; i++) await push(i);
      await shard.checkpoint();
      for (let i = 5; i < 9; i++) await push(i);
      const before = await pull();
      const hist = shard.status().staleness.histogram!;
      expect(hist.counts.reduce((a, b) => a + b, 0)).toBe(9);

      await expect(shard.reload('checkpoint-999')).rejects.toMatchObject({ code: 'CONFIG' });
      const info = await shard.reload();
      expect(info.versionBefore).toBe(9);
      expect(info.version).toBe(9);
      expect(info.replayedRecords).toBeGreaterThanOrEqual(4);
      expect(shard.state).toBe('running');
      const after = await pull();
      expect(after.version).toBe(before.version);
      expect(Array.from(after.tables[0]!.values)).toEqual(Array.from(before.tables[0]!.values));
      // Serving again and the log still works: a new push lands on the reloaded state.
      expect((await push(9)).version).toBe(10);
      // The named newest checkpoint is accepted.
      const seg = shard.status().lastCheckpoint!.segment;
      expect((await shard.reload(`checkpoint-${seg}`)).version).toBe(10);
    } finally {
      await shard.stop();
    }
  });
});
