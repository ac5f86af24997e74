import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { startNatsServer } from '@freshet/nats';
import { encodePull } from '@freshet/protocol';
import { ShardThreads } from '@freshet/shard';

/**
 * What a shard host's thread spends to hand one host-message part to a shard thread and take its
 * reply (shard host option `threads`): the real path (ShardThreads, a real shard in a thread
 * answering a pull of `keys` rows), timed by the host thread's event-loop busy time, so the
 * shard's own work in its thread is not counted.
 */
export async function measureThreadHandoff(
  opts: { calls?: number; keys?: number } = {},
): Promise<{ threadPartUs: number; threadPartSerialUs: number }> {
  const calls = opts.calls ?? 20_000;
  const keys = opts.keys ?? 24;
  const server = await startNatsServer({});
  const dir = await mkdtemp(join(tmpdir(), 'freshet-thread-probe-'));
  const threads = await ShardThreads.start(
    1,
    {
      cluster: 'probe',
      host: 'probe',
      nats: { servers: [server.url] },

      statusMs: 1000,
    },
    () => undefined,
  );
  try {
    const shard = threads.shard(
      {
        cluster: 'probe',
        shard: 0,
        shards: 1,
        nats: { servers: [server.url] },
        dataDir: dir,
        fsync: false,
        checkpointIntervalMs: 0,
        model: { name: 'probe', tables: [{ name: 'emb', dim: 16, optimizer: { kind: 'adam', lr: 0.01 } }] },
      },
      () => undefined,
    );
    await shard.start();
    const k = new Uint32Array(2 * keys);
    for (let i = 0; i < keys; i++) k.set([7, 1000 + i], 2 * i);
    const frame = encodePull({ worker: 'probe', tables: [{ t: 0, keys: k }] });
    const one = async () => {
      const r = await shard.hostCall('pull', frame);
      if (!r) throw new Error('the probe shard did not answer');
    };
    /** Host-thread busy µs per part with `depth` parts in flight. */
    const busyUs = async (n: number, depth: number) => {
      const e0 = performance.eventLoopUtilization();
      let sent = 0;
      await Promise.all(
        Array.from({ length: depth }, async () => {
          while (sent < n) {
            sent++;
            await one();
          }
        }),
      );
      return (performance.eventLoopUtilization(e0).active * 1000) / n;
    };
    await busyUs(2000, 64);
    const piped = await busyUs(calls, 64);
    const serial = await busyUs(Math.ceil(calls / 4), 1);
    await shard.stop();
    return { threadPartUs: +piped.toFixed(3), threadPartSerialUs: +serial.toFixed(3) };
  } finally {
    await threads.close();
    await server.stop();
    await rm(dir, { recursive: true, force: true });
  }
}
