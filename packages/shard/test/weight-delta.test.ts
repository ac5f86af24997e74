import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { requestBytes } from '@freshet/nats';
import { decodePullReply, decodePushReply, encodePull, encodePush, subjects } from '@freshet/protocol';
import { uniqueName, useNats } from '@freshet/testkit';
import { Shard } from '../src/shard.js';

// A worker's dense replica flushes weight deltas (`add` pushes) under `+`-joined batch ids. They
// must be logged and replayed like gradients, and their parts must stay known across a reload,
// or a batch recovered by another worker after a crash would be applied twice.

const nats = useNats();
const dataDir = mkdtempSync(join(tmpdir(), 'freshet-weight-delta-'));
afterAll(() => rmSync(dataDir, { recursive: true, force: true }));

const DIM = 6;
const model = {
  name: 'delta',
  tables: [{ name: 'mlp', kind: 'dense', dim: DIM, optimizer: { kind: 'adam', lr: 0.01 } }],
};
const key = new Uint32Array(2);

/** A one-shard cluster of `model` on the shared server, with pull and additive-push helpers. */
async function withShard(
  tag: string,
  fn: (h: {
    shard: Shard;
    pull: () => Promise<ReturnType<typeof decodePullReply>>;
    add: (id: string, v: number, table?: number, dim?: number) => Promise<ReturnType<typeof decodePushReply>>;
  }) => Promise<void>,
): Promise<void> {
  const cluster = uniqueName(tag);
  const s = subjects(cluster);
  const shard = new Shard(
    { cluster, shard: 0, shards: 1, nats: { servers: nats.url }, model, dataDir, checkpointIntervalMs: 0 },
    { nc: nats.nc, log: () => undefined },
  );
  await shard.start();
  try {
    const pull = async () =>
      decodePullReply(await requestBytes(nats.nc, s.pull(0), encodePull({ tables: [{ t: 0, keys: key }] })));
    const add = async (id: string, v: number, table = 0, dim = DIM) =>
      decodePushReply(
        await requestBytes(
          nats.nc,
          s.push(0),
          encodePush({
            id,
            worker: 'w',
            clock: 0,
            base: 0,
            add: true,
            examples: 3,
            tables: [
              { t: table, dim, keys: key, grads: new Float32Array(dim).fill(v), counts: Uint32Array.of(3) },
            ],
          }),
        ),
      );
    await fn({ shard, pull, add });
  } finally {
    await shard.stop();
  }
}

describe('additive dense pushes on a shard', () => {
  it('are applied once per part, logged, and replayed to the same weights', async () => {
    await withShard('wdelta', async ({ shard, pull, add }) => {
      const w0 = (await pull()).tables[0]!.values.slice();
      expect((await add('a.s0+b.s0', 0.25)).duplicate).toBe(false);
      await shard.checkpoint();
      expect((await add('c.s0', -0.5)).duplicate).toBe(false);
      // a retry of the flush, a part on its own, and a flush sharing a part: all duplicates
      expect((await add('a.s0+b.s0', 0.25)).duplicate).toBe(true);
      expect((await add('b.s0', 9)).duplicate).toBe(true);
      expect((await add('d.s0+c.s0', 9)).duplicate).toBe(true);
      const before = await pull();
      for (let i = 0; i < DIM; i++) {
        expect(before.tables[0]!.values[i]).toBe(Math.fround(Math.fround(w0[i]! + 0.25) - 0.5));
      }
      expect(before.version).toBe(2);
      // bad deltas are refused with a code, nothing applied
      await expect(add('short', 1, 0, DIM - 1)).rejects.toMatchObject({ code: 'WRONG_LENGTH' });
      await expect(add('nan', Number.NaN)).rejects.toMatchObject({ code: 'NON_FINITE' });

      // checkpoint + log replay: same weights, and the parts are still known
      const info = await shard.reload();
      expect(info.version).toBe(2);
      const after = await pull();
      expect(Array.from(after.tables[0]!.values)).toEqual(Array.from(before.tables[0]!.values));
      expect((await add('c.s0', 9)).duplicate).toBe(true);
      expect((await add('a.s0', 9)).duplicate).toBe(true);
      expect((await add('e.s0', 0.125)).duplicate).toBe(false);
    });
  });

  it('name the push that last changed a dense tensor, in pulls and in additive push replies', async () => {
    await withShard('wlast', async ({ shard, pull, add }) => {
      const last = async () => (await pull()).tables[0]!.last;
      const prev = async (id: string) => (await add(id, 0.5)).prev;
      const start = await last();
      expect(start).toMatch(/^~start\./);
      expect(await prev('a')).toEqual([{ t: 0, id: start }]);
      expect(await last()).toBe('a');
      await shard.checkpoint();
      expect(await prev('b')).toEqual([{ t: 0, id: 'a' }]);
      // replayed from the log: the replayed push is the last change again
      await shard.reload();
      expect(await last()).toBe('b');
      // restored from a checkpoint with nothing to replay: a new start token, never the old one,
      // so a replica that pulled before cannot take the restored tensor for the one it holds
      await shard.checkpoint();
      await shard.reload();
      const restarted = await last();
      expect(restarted).toMatch(/^~start\./);
      expect(restarted).not.toBe(start);
    });
  });
});
