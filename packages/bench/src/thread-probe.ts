import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { connectNats, startNatsServer } from '@freshet/nats';
import { encodePull } from '@freshet/protocol';
import { HandOffs, Shard, ShardThreads, type ShardOptionsInput } from '@freshet/shard';

/**
 * What a shard host's thread spends to hand one host-message part to a shard thread and take its
 * reply (shard host option `threads`): the real path (ShardThreads, a real shard in a thread
 * answering a pull of `keys` rows), timed by the host thread's event-loop busy time, so the
 * shard's own work in its thread is not counted (`threadPartUs`). The receiving side
 * (`threadPartRecvUs`): the shard thread's busy time per part less what the same pull costs a
 * shard called on its own thread (unpacking, the reply's packing, the port's message events).
 * `threadGroupPartUs`: what each part beyond the first adds to a group of `group` parts handed
 * over together (one host message's parts for one thread: HandOffs), host thread's busy time.
 */
export async function measureThreadHandoff(
  opts: { calls?: number; keys?: number; group?: number } = {},
): Promise<{
  threadPartUs: number;
  threadPartSerialUs: number;
  threadPartRecvUs: number;
  threadGroupPartUs: number;
}> {
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
    const options = (cluster: string, sub: string): ShardOptionsInput => ({
      cluster,
      shard: 0,
      shards: 1,
      nats: { servers: [server.url] },
      dataDir: join(dir, sub),
      fsync: false,
      checkpointIntervalMs: 0,
      model: { name: 'probe', tables: [{ name: 'emb', dim: 16, optimizer: { kind: 'adam', lr: 0.01 } }] },
    });
    const shard = threads.shard(options('probe', 'threaded'), () => undefined);
    await shard.start();
    const k = new Uint32Array(2 * keys);
    for (let i = 0; i < keys; i++) k.set([7, 1000 + i], 2 * i);
    const frame = encodePull({ worker: 'probe', tables: [{ t: 0, keys: k }] });
    const one = async () => {
      const r = await shard.hostCall('pull', frame);
      if (!r) throw new Error('the probe shard did not answer');
    };
    /** Host-thread busy µs per part with `depth` parts in flight (and the shard thread's). */
    const busyUs = async (n: number, depth: number, call = one) => {
      const e0 = performance.eventLoopUtilization();
      const t0 = threads.eventLoopUtilization()[0]!;
      let sent = 0;
      await Promise.all(
        Array.from({ length: depth }, async () => {
          while (sent < n) {
            sent++;
            await call();
          }
        }),
      );
      const t1 = threads.eventLoopUtilization()[0]!;
      return {
        host: (performance.eventLoopUtilization(e0).active * 1000) / n,
        thread: ((t1.active - t0.active) * 1000) / n,
      };
    };
    await busyUs(2000, 64);
    const piped = await busyUs(calls, 64);
    const serial = await busyUs(Math.ceil(calls / 4), 1);
    // one host message's parts for the thread as a group (HandOffs): 1 and `group` parts
    const grouped = (k: number) => async () => {
      const h = new HandOffs();
      for (let i = 0; i < k; i++) void shard.hostCall('pull', frame, h);
      const [g] = h.groups();
      await g!.done;
      if (g!.result!.some((r) => !r)) throw new Error('the probe shard did not answer');
    };
    const group = opts.group ?? 8;
    // a difference of two busy times, each disturbed by the other thread taking the core: the
    // median of alternating rounds
    const extra: number[] = [];
    for (let round = 0; round < 5; round++) {
      const one = await busyUs(Math.ceil(calls / 8), 64, grouped(1));
      const k = await busyUs(Math.ceil(calls / group / 4), 64, grouped(group));
      extra.push((k.host - one.host) / (group - 1));
    }
    extra.sort((a, b) => a - b);
    await shard.stop();
    // the same pulls answered by a shard on this thread: the shard's own work per part
    const nc = await connectNats({ servers: [server.url] }, 'freshet-thread-probe');
    const direct = new Shard(options('probe-direct', 'direct'), { nc, log: () => undefined });
    try {
      await direct.start();
      const own = async () => {
        if (!(await direct.hostCall('pull', frame))) throw new Error('the probe shard did not answer');
      };
      await busyUs(2000, 64, own);
      const alone = await busyUs(calls, 64, own);
      return {
        threadPartUs: +piped.host.toFixed(3),
        threadPartSerialUs: +serial.host.toFixed(3),
        threadPartRecvUs: +Math.max(0, piped.thread - alone.host).toFixed(3),
        threadGroupPartUs: +Math.max(0, extra[2]!).toFixed(3),
      };
    } finally {
      await direct.stop();
      await nc.drain().catch(() => undefined);
    }
  } finally {
    await threads.close();
    await server.stop();
    await rm(dir, { recursive: true, force: true });
  }
}
