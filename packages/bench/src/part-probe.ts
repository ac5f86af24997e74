import { mkdtemp, rm } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import type { NatsConnection } from 'nats';
import { createModel, criteoWideDeepConfig, parseCriteoLine, type Example } from '@freshet/model';
import { connectNats, startNatsServer } from '@freshet/nats';
import {
  decodePull,
  encodePull,
  encodePullReply,
  encodePush,
  encodePushReply,
  pullWidth,
  pushWidth,
} from '@freshet/protocol';
import { Shard } from '@freshet/shard';
import { ShardClient, type HostRouter } from '@freshet/worker';

/**
 * What one part of a batch costs, beyond its rows: a batch's keys split by owning shard, each
 * shard's part is a request of its own (frame, promise, reply, the rows put back in place), so a
 * batch spread over more shards than it has rows per shard pays this once per row. The scaling
 * model charges it per part (cluster-sim.ts).
 *
 * - `workerPullPartUs`, `workerPushPartUs`: the worker's main thread per part of a Criteo batch of
 *   256 (ShardClient: route, pull, push), the slope between `few` and `many` shards. The bus is
 *   replaced by an in-process responder with ready replies, so that neither NATS nor the shards'
 *   work is counted here (the model charges those apart).
 * - `shardPullPartUs`, `shardPushPartUs`: a shard's busy time per request of one row (a real
 *   Shard on this thread, its handlers as a host calls them), its one row included. 64 requests
 *   in flight, so its log commits pushes in groups (up to 64 a write): with fewer in flight each
 *   push carries more of a write (docs/performance.md, "What the model leaves out").
 */
export async function measurePartCosts(
  dataPath: string,
  opts: { few?: number; many?: number; batches?: number; calls?: number } = {},
): Promise<{
  workerPullPartUs: number;
  workerPushPartUs: number;
  shardPullPartUs: number;
  shardPushPartUs: number;
  /** The batch's parts over `few` and over `many` shards (the slope's run). */
  partsFew: number;
  partsMany: number;
}> {
  const server = await startNatsServer({});
  const dir = await mkdtemp(join(tmpdir(), 'freshet-part-probe-'));
  const nc = await connectNats({ servers: [server.url] }, 'freshet-part-probe');
  try {
    const worker = await workerParts(nc, dataPath, opts);
    const shard = await shardParts(server.url, nc, dir, opts.calls ?? 20_000);
    return { ...worker, ...shard };
  } finally {
    await nc.drain().catch(() => undefined);
    await server.stop();
    await rm(dir, { recursive: true, force: true });
  }
}

const r3 = (x: number) => Math.round(x * 1000) / 1000;

async function workerParts(
  nc: NatsConnection,
  dataPath: string,
  opts: { few?: number; many?: number; batches?: number },
) {
  const model = createModel(criteoWideDeepConfig());
  const spec = model.spec;
  const examples: Example[] = [];
  for (const line of readFileSync(dataPath, 'utf8').split('\n')) {
    const e = line ? parseCriteoLine(line) : undefined;
    if (e) examples.push(e);
    if (examples.length >= 256) break;
  }
  const enc = model.encode(examples);
  const denseTables = spec.tables.flatMap((t, i) => (t.kind === 'dense' ? [i] : []));
  const batch = { size: examples.length, sparse: enc.sparse, denseTables };
  const grads = spec.tables.map((t, i) => {
    const s = enc.sparse.find((x) => x.table === i);
    return new Float32Array((s ? s.keys.length / 2 : 1) * pushWidth(t));
  });
  /** Main-thread ms per batch's pull and push over `shards` shards, and the parts. */
  const timeAt = async (shards: number) => {
    const replies = new Map<number, Uint8Array>();
    const pushReply = encodePushReply({ version: 1, staleness: 0, applied: 1, duplicate: false });
    // answers each shard's pull with rows of the asked shape (made once per shard, outside the
    // timed rounds), each push with an acceptance
    const responder = {
      request(op: string, shard: number, frame: Uint8Array): Promise<Uint8Array> {
        if (op === 'push') return Promise.resolve(pushReply);
        let r = replies.get(shard);
        if (!r) {
          const q = decodePull(frame);
          r = encodePullReply({
            version: 1,
            tables: q.tables.map((t) => {
              const dim = pullWidth(spec.tables[t.t]!, false);
              return { t: t.t, dim, values: new Float32Array((dim * t.keys.length) / 2) };
            }),
          });
          replies.set(shard, r);
        }
        return Promise.resolve(r);
      },
    };
    const client = new ShardClient(nc, {
      cluster: 'probe',
      shards,
      spec,
      worker: 'probe',
      timeoutMs: 10_000,
      retry: { attempts: 1, baseMs: 1, maxMs: 1 },
      denseCacheMaxLag: 0,
      router: responder as unknown as HostRouter,
    });
    let pullMs = 0;
    let pushMs = 0;
    let parts = 0;
    const n = opts.batches ?? 20;
    for (let i = -3; i < n; i++) {
      const t0 = performance.now();
      const plan = client.route(batch);
      const pulled = await client.pull(plan);
      const t1 = performance.now();
      await client.push(plan, pulled, grads, { id: `b${i}` });
      const t2 = performance.now();
      if (i < 0) continue;
      pullMs += t1 - t0;
      pushMs += t2 - t1;
      parts = plan.parts.length;
    }
    return { pullMs: pullMs / n, pushMs: pushMs / n, parts };
  };
  const few = await timeAt(opts.few ?? 16);
  const many = await timeAt(opts.many ?? 1024);
  const dp = Math.max(1, many.parts - few.parts);
  return {
    workerPullPartUs: r3(Math.max(0, ((many.pullMs - few.pullMs) * 1000) / dp)),
    workerPushPartUs: r3(Math.max(0, ((many.pushMs - few.pushMs) * 1000) / dp)),
    partsFew: few.parts,
    partsMany: many.parts,
  };
}

async function shardParts(url: string, nc: NatsConnection, dir: string, calls: number) {
  const shard = new Shard(
    {
      cluster: 'probe',
      shard: 0,
      shards: 1,
      nats: { servers: [url] },
      dataDir: dir,
      fsync: false,
      checkpointIntervalMs: 0,
      model: { name: 'probe', tables: [{ name: 'emb', dim: 16, optimizer: { kind: 'adam', lr: 0.01 } }] },
    },
    { nc, log: () => undefined },
  );
  await shard.start();
  try {
    const keys = (i: number) => Uint32Array.of(7, (i * 131) % 50_000);
    let id = 0;
    const pull = (i: number) => encodePull({ worker: 'probe', tables: [{ t: 0, keys: keys(i) }] });
    const push = (i: number) =>
      encodePush({
        id: `p${id++}`,
        worker: 'probe',
        clock: 0,
        base: 0,
        tables: [
          { t: 0, dim: 16, keys: keys(i), grads: new Float32Array(16).fill(1e-3), counts: Uint32Array.of(1) },
        ],
      });
    /** Busy µs per request, 64 in flight; frames made before the clock starts. */
    const busyUs = async (kind: 'pull' | 'push', n: number) => {
      const frames = Array.from({ length: n }, (_, i) => (kind === 'pull' ? pull(i) : push(i)));
      const e0 = performance.eventLoopUtilization();
      let next = 0;
      await Promise.all(
        Array.from({ length: 64 }, async () => {
          while (next < n) {
            const r = await shard.hostCall(kind, frames[next++]!);
            if (!r) throw new Error('the probe shard did not answer');
          }
        }),
      );
      return (performance.eventLoopUtilization(e0).active * 1000) / n;
    };
    await busyUs('push', 2000);
    await busyUs('pull', 2000);
    // medians of alternating rounds: the log's writes and the collector land unevenly
    const pulls: number[] = [];
    const pushes: number[] = [];
    for (let round = 0; round < 3; round++) {
      pulls.push(await busyUs('pull', Math.ceil(calls / 3)));
      pushes.push(await busyUs('push', Math.ceil(calls / 3)));
    }
    const mid = (xs: number[]) => [...xs].sort((a, b) => a - b)[1]!;
    return { shardPullPartUs: r3(mid(pulls)), shardPushPartUs: r3(mid(pushes)) };
  } finally {
    await shard.stop();
  }
}
