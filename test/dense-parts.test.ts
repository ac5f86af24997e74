import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensureStream } from '@freshet/client';
import { createModel, initBackend, initRows, predict, type ModelConfigInput } from '@freshet/model';
import { requestBytes } from '@freshet/nats';
import {
  decodePullReply,
  denseTensors,
  encodePull,
  joinTensor,
  shardOfDense,
  shardOfKey,
  subjects,
} from '@freshet/protocol';
import type { ServingNode } from '@freshet/serving';
import { startShard, type Shard } from '@freshet/shard';
import { startWorker } from '@freshet/worker';
import {
  outstanding,
  placeShardsInKv,
  publishExamples,
  uniqueName,
  useNats,
  waitFor,
} from '@freshet/testkit';
import { startShardHosts, shardsAnswering } from './host-fixtures.js';
import { postScore, startReadyNode, userItemDevice } from './score-kit.js';

const SHARDS = 4;
const PARTITIONS = 2;
// mlp.0.w is 3 fields × 8 × 16 = 384 floats: four parts of 96, one per shard.
const model: ModelConfigInput = {
  name: 'parts',
  kind: 'wide-deep',
  embeddingDim: 8,
  hidden: [16],
  densePartFloats: 96,
  optimizer: { kind: 'adam', lr: 0.05 },
  features: userItemDevice,
};
const compiled = createModel(model);
const spec = compiled.spec;
const request = {
  user: 'u3',
  context: { device: 'ios' },
  candidates: Array.from({ length: 6 }, (_, i) => ({ item: `i${i}` })),
};

/**
 * A partitioned MLP over real shards, a real worker and real serving nodes: each part of the
 * first layer lives on its own shard; the worker's dense replica flushes every part to its owner;
 * a whole-model node and two sliced nodes each join the parts into the tensor the shards hold,
 * and score what the model scores on the shards' weights. Then the same on shard hosts (threads,
 * host routing, deltas per host and per slice), the layout a large cluster runs.
 */
describe('partitioned dense tensors in a cluster', () => {
  const nats = useNats();
  const stops: Array<() => Promise<void>> = [];
  beforeAll(async () => {
    await initBackend();
  });
  afterAll(async () => {
    for (const stop of stops.reverse()) await stop().catch(() => undefined);
  });

  it('spread one tensor over the shards, train it there and serve it joined', async () => {
    const cluster = uniqueName('parts').replace(/[^A-Za-z0-9_-]/g, '');
    const dir = await mkdtemp(join(tmpdir(), 'freshet-parts-'));
    stops.push(() => rm(dir, { recursive: true, force: true }));
    await ensureStream(nats.nc, { cluster, partitions: PARTITIONS });
    const shards: Shard[] = [];
    for (let shard = 0; shard < SHARDS; shard++) {
      const sh = await startShard({
        cluster,
        shard,
        shards: SHARDS,
        nats: { servers: nats.url },
        model: spec,
        dataDir: join(dir, `shard-${shard}`),
        deltaIntervalMs: 5,
        fsync: false,
        checkpointIntervalMs: 0,
      });
      shards.push(sh);
      stops.push(() => sh.stop());
    }

    // Each part of the first layer is held by exactly one shard, a different one each.
    const w0 = compiled.layout.mlp[0]!.w;
    expect(w0.tables.length).toBe(SHARDS);
    const holders = w0.tables.map((t) => {
      const held = shards.flatMap((sh, i) => (sh.status().tables.find((x) => x.t === t)?.rows ? [i] : []));
      expect(held).toEqual([shardOfDense(spec.tables[t]!, SHARDS)]);
      return held[0]!;
    });
    expect(new Set(holders).size).toBe(SHARDS);

    await trainAndServe(cluster);
  });

  it('does the same on threaded shard hosts that send deltas per host and per slice', async () => {
    const cluster = uniqueName('partsh').replace(/[^A-Za-z0-9_-]/g, '');
    const dir = await mkdtemp(join(tmpdir(), 'freshet-partsh-'));
    stops.push(() => rm(dir, { recursive: true, force: true }));
    await ensureStream(nats.nc, { cluster, partitions: PARTITIONS });
    // host a runs three shards on two shard threads, b one on its own thread
    await placeShardsInKv(nats.nc, cluster, ['a', 'b', 'a', 'a']);
    const hosts = await startShardHosts({
      cluster,
      url: nats.url,
      dir,
      threads: { a: 2, b: 0 },
      shard: {
        model: spec,
        fsync: false,
        checkpointIntervalMs: 0,
        deltaIntervalMs: 5,
        hostDeltas: true,
        servingSlices: 2,
      },
    });
    for (const h of hosts) stops.push(() => h.stop());
    await waitFor(async () => (await shardsAnswering(nats.nc, cluster, SHARDS)) === SHARDS, {
      timeoutMs: 15_000,
      message: 'the hosts to run all four shards',
    });
    await trainAndServe(cluster);
  });

  /**
   * Three serving nodes (whole, and a slice of two each), a worker with a dense replica and 96
   * events; then every part's owner must have moved, and every node must serve what the model
   * scores on the weights pulled from the shards.
   */
  async function trainAndServe(cluster: string): Promise<void> {
    const s = subjects(cluster);
    const w0 = compiled.layout.mlp[0]!.w;
    const pullReply = async (shard: number, t: number, keys: Uint32Array) =>
      decodePullReply(
        await requestBytes(nats.nc, s.pull(shard), encodePull({ worker: 'test', tables: [{ t, keys }] })),
      );
    const partVersion = async (t: number) =>
      (await pullReply(shardOfDense(spec.tables[t]!, SHARDS), t, new Uint32Array(2))).version;
    const serve = async (slice?: { index: number; count: number }): Promise<ServingNode> => {
      const node = await startReadyNode({ cluster, shards: SHARDS, url: nats.url, model }, slice);
      stops.push(() => node.stop());
      return node;
    };
    const nodes = [await serve(), await serve({ index: 0, count: 2 }), await serve({ index: 1, count: 2 })];
    const before = await score(nodes[0]!);

    const worker = await startWorker({
      cluster,
      nats: { servers: nats.url },
      model,
      shards: SHARDS,
      partitions: PARTITIONS,
      batch: { size: 8, maxWaitMs: 5 },
      dense: { mode: 'replica', syncExamples: 16, maxDelayMs: 100 },
    });
    stops.push(() => worker.stop());
    const versions0 = await Promise.all(w0.tables.map((t) => partVersion(t)));
    await publishExamples(nats.nc, cluster, 0, 96, PARTITIONS, {
      user: (k) => `u${k % 5}`,
      label: (k) => ((k % 5) + (k % 6)) % 2,
      features: (k, user) => ({ user, item: `i${k % 6}`, device: k % 2 ? 'ios' : 'web' }),
    });
    await waitFor(async () => (await outstanding(nats.nc, cluster, PARTITIONS)) === 0, {
      timeoutMs: 30_000,
      message: 'every event trained and acked',
    });
    // Acked only after their flush: every part's owner has added the replica's change.
    expect(worker.status().dense?.flushes).toBeGreaterThan(0);
    const versions1 = await Promise.all(w0.tables.map((t) => partVersion(t)));
    versions1.forEach((v, i) => expect(v, `part ${i}`).toBeGreaterThan(versions0[i]!));

    // The tensors as the shards hold them, and what the model scores with them.
    const batch = compiled.encode(
      request.candidates.map((c) => ({
        features: { user: request.user, device: request.context.device, item: c.item },
        label: 0,
      })),
    );
    const rows = initRows(compiled, batch);
    const pull = async (shard: number, t: number, keys: Uint32Array) =>
      (await pullReply(shard, t, keys)).tables[0]!.values;
    for (const sp of batch.sparse) {
      const dim = spec.tables[sp.table]!.dim;
      const out = new Float32Array((sp.keys.length / 2) * dim);
      for (let i = 0; i < sp.keys.length / 2; i++) {
        const key = sp.keys.subarray(2 * i, 2 * i + 2);
        out.set(await pull(shardOfKey(sp.table, key[0]!, key[1]!, SHARDS), sp.table, key), i * dim);
      }
      rows[sp.table] = out;
    }
    for (const t of batch.denseTables)
      rows[t] = await pull(shardOfDense(spec.tables[t]!, SHARDS), t, new Uint32Array(2));
    const trained = joinTensor(w0, (t) => rows[t]!);
    const initial = joinTensor(w0, (t) => initRows(compiled, batch)[t]!);
    expect(trained).not.toEqual(initial);
    const want = predict(compiled, batch, rows);

    // Every node, whole or sliced, serves exactly that once the deltas (and the sliced nodes'
    // reads of other slices' parts) are in.
    const got = await waitFor(
      async () => {
        const answers = await Promise.all(nodes.map(score));
        return answers.every((a) => a.every((x, i) => Math.abs(x - want[i]!) < 1e-5)) ? answers : undefined;
      },
      { timeoutMs: 15_000, message: 'every node to serve the shards’ weights' },
    );
    expect(got![0]).not.toEqual(before);
    // The whole node joined parts it followed by delta from all four shards.
    expect(denseTensors(spec).find((d) => d.name === w0.name)!.tables).toEqual(w0.tables);
    expect(nodes[0]!.status().replica.seqs.every((q) => q > 0)).toBe(true);
  }
});

async function score(node: ServingNode): Promise<number[]> {
  const a = await postScore(node, request);
  if (a.status !== 200) throw new Error(`score: ${a.status} ${JSON.stringify(a.body.error)}`);
  return a.body.scores!;
}
