import { afterAll, describe, expect, it } from 'vitest';
import { createModel, DenseOptimizer, type ModelConfigInput } from '@freshet/model';
import { subjects, type OptimizerSpec } from '@freshet/protocol';
import type { ShardCore } from '@freshet/shard';
import { outstanding, publishExamples, setAckWait, uniqueName, useNats, waitFor } from '@freshet/testkit';
import type { NatsConnection } from 'nats';
import type { WorkerOptionsInput } from '../src/worker-options.js';
import { Worker } from '../src/worker.js';
import {
  publishUserItemPattern,
  ShardHarness,
  testCore,
  wideDeepTestModel,
  smallWorkerOptions,
} from './shard-harness.js';

const nats = useNats();
const workers: Worker[] = [];
const conns: NatsConnection[] = [];
afterAll(async () => {
  await Promise.allSettled(workers.map((w) => w.stop(2000)));
  await Promise.allSettled(conns.map((c) => c.close()));
});

const wideDeep = wideDeepTestModel;

const core = testCore;

const denseOf = (c: ShardCore, t: number): Float32Array =>
  c.pull({ worker: 'w', clock: 0, tables: [{ t, keys: new Uint32Array(2) }] }).tables[0]!.values.slice();

/** A deterministic pseudo-random gradient of n floats. */
function gradient(n: number, seed: number, scale = 1): Float32Array {
  const g = new Float32Array(n);
  let x = seed * 2654435761;
  for (let i = 0; i < n; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    g[i] = ((x / 2 ** 32) * 2 - 1) * scale;
  }
  return g;
}

describe('DenseOptimizer', () => {
  const cases: [string, OptimizerSpec, Partial<ModelConfigInput>][] = [
    [
      'adam, table bias correction',
      { kind: 'adam', lr: 0.01, beta1: 0.9, beta2: 0.999, eps: 1e-8, biasCorrection: 'table' },
      {},
    ],
    [
      'adam, row bias correction, clip and l2',
      { kind: 'adam', lr: 0.003, beta1: 0.8, beta2: 0.99, eps: 1e-6, biasCorrection: 'row' },
      { clipNorm: 0.5, l2: 0.01 },
    ],
    [
      'adagrad with examples, clip and l2',
      { kind: 'adagrad', lr: 0.05, initialAccumulator: 0.1, eps: 1e-10 },
      { clipNorm: 2, l2: 0.001 },
    ],
    ['sgd with l2', { kind: 'sgd', lr: 0.1 }, { l2: 0.01 }],
  ];
  it.each(cases)('%s: bit-identical to the shard applying the same gradients', (_name, optimizer, extra) => {
    const spec = createModel(wideDeep(optimizer, extra)).spec;
    const c = core(spec);
    const dense = spec.tables.map((t, i) => (t.kind === 'dense' ? i : -1)).filter((i) => i >= 0);
    expect(dense.length).toBeGreaterThan(1);
    for (const t of dense) {
      const opt = new DenseOptimizer(spec.tables[t]!);
      const w = denseOf(c, t);
      for (let step = 0; step < 40; step++) {
        const g = gradient(w.length, 7 * t + step, step % 5 === 0 ? 10 : 0.1);
        const examples = 1 + (step % 7);
        const lrScale = step % 3 === 0 ? 0.5 : 1;
        c.applyPush(
          {
            id: `p${t}.${step}`,
            worker: 'w',
            clock: 0,
            base: c.version,
            lrScale,
            examples,
            tables: [
              { t, dim: w.length, keys: new Uint32Array(2), grads: g, counts: Uint32Array.of(examples) },
            ],
          },
          Date.now(),
        );
        opt.apply(w, g, lrScale, examples);
      }
      const shard = denseOf(c, t);
      expect(Buffer.from(w.buffer).equals(Buffer.from(shard.buffer))).toBe(true);
    }
  });

  it('refuses a non-finite update whole and FTRL tables', () => {
    const spec = createModel(wideDeep({ kind: 'sgd', lr: 1 })).spec;
    const t = spec.tables.findIndex((x) => x.kind === 'dense');
    const opt = new DenseOptimizer(spec.tables[t]!);
    const w = new Float32Array(spec.tables[t]!.dim).fill(1);
    const g = new Float32Array(w.length).fill(3e38);
    g[0] = -3e38;
    expect(() => opt.apply(w, g, 1e3, 1)).toThrow(/non-finite/);
    expect([...w].every((x) => x === 1)).toBe(true);
    expect(opt.steps).toBe(0);
    const ftrl = {
      ...spec.tables[t]!,
      optimizer: { kind: 'ftrl' as const, alpha: 0.1, beta: 1, l1: 0, l2: 0 },
    };
    expect(() => new DenseOptimizer(ftrl)).toThrow(/FTRL/);
  });

  it('a refused update leaves w, the moments and the step as they were; undo takes back the last one', () => {
    const spec = createModel(wideDeep({ kind: 'adam', lr: 0.01 })).spec;
    const t = spec.tables.findIndex((x) => x.kind === 'dense');
    const dim = spec.tables[t]!.dim;
    const a = new DenseOptimizer(spec.tables[t]!);
    const b = new DenseOptimizer(spec.tables[t]!);
    const wa = gradient(dim, 5, 0.1);
    const wb = wa.slice();
    const g1 = gradient(dim, 6, 0.01);
    const g2 = gradient(dim, 7, 0.01);
    const bad = new Float32Array(dim).fill(1e30); // g² overflows float32 in v
    a.apply(wa, g1, 1, 1);
    b.apply(wb, g1, 1, 1);
    const after1 = wa.slice();
    expect(() => a.apply(wa, bad, 1, 1)).toThrow(/non-finite/);
    expect(Buffer.from(wa.buffer).equals(Buffer.from(after1.buffer))).toBe(true);
    expect(a.steps).toBe(1);
    // the moments and β^t too: the next update lands exactly where the other optimizer's does
    a.apply(wa, g2, 1, 1);
    b.apply(wb, g2, 1, 1);
    expect(Buffer.from(wa.buffer).equals(Buffer.from(wb.buffer))).toBe(true);
    a.undo(wa);
    expect(Buffer.from(wa.buffer).equals(Buffer.from(after1.buffer))).toBe(true);
    expect(a.steps).toBe(1);
    a.apply(wa, g2, 1, 1);
    expect(Buffer.from(wa.buffer).equals(Buffer.from(wb.buffer))).toBe(true);
  });
});

describe('additive pushes on the shard', () => {
  const spec = createModel(wideDeep()).spec;
  const t = spec.tables.findIndex((x) => x.kind === 'dense');
  const dim = spec.tables[t]!.dim;
  const addPush = (id: string, d: Float32Array) => ({
    id,
    worker: 'w',
    clock: 0,
    base: 0,
    add: true,
    examples: 5,
    tables: [{ t, dim, keys: new Uint32Array(2), grads: d, counts: Uint32Array.of(5) }],
  });

  it('adds the delta, takes no optimizer step and dedupes by part', () => {
    const c = core(spec);
    const w0 = denseOf(c, t);
    const d = gradient(dim, 3, 0.01);
    c.applyPush(addPush('a.s0+b.s0', d), Date.now());
    const w1 = denseOf(c, t);
    for (let i = 0; i < dim; i++) expect(w1[i]).toBe(Math.fround(w0[i]! + d[i]!));
    // a part on its own, or a flush sharing a part, is a duplicate; a fresh part is not
    expect(c.appliedVersion('b.s0')).toBe(c.version);
    expect(c.appliedVersion('c.s0+a.s0')).toBe(c.version);
    expect(c.appliedVersion('c.s0')).toBeUndefined();
    // the table's Adam step did not move (a later gradient push's bias correction is its own)
    const g = gradient(dim, 4, 0.1);
    const ref = core(spec);
    const shifted = denseOf(ref, t);
    ref.applyPush(addPush('x.s0', d), Date.now());
    const grad = (id: string) => ({
      id,
      worker: 'w',
      clock: 0,
      base: 1,
      tables: [{ t, dim, keys: new Uint32Array(2), grads: g, counts: Uint32Array.of(1) }],
    });
    c.applyPush(grad('g1'), Date.now());
    const opt = new DenseOptimizer(spec.tables[t]!);
    for (let i = 0; i < dim; i++) shifted[i] = Math.fround(shifted[i]! + d[i]!);
    opt.apply(shifted, g, 1, 1);
    expect(Buffer.from(denseOf(c, t).buffer).equals(Buffer.from(shifted.buffer))).toBe(true);
  });

  it('refuses deltas of the wrong size (rows or whole tensors) or non-finite, applying nothing', () => {
    const c = core(spec);
    const sparse = spec.tables.findIndex((x) => x.kind !== 'dense');
    const before = denseOf(c, t);
    // embedding rows take deltas too (a warm start's import), one whole row each
    expect(() =>
      c.applyPush(
        {
          ...addPush('s', new Float32Array(spec.tables[sparse]!.dim)),
          tables: [
            {
              t: sparse,
              dim: spec.tables[sparse]!.dim,
              keys: new Uint32Array(2),
              grads: new Float32Array(spec.tables[sparse]!.dim - 1),
              counts: Uint32Array.of(1),
            },
          ],
        },
        Date.now(),
      ),
    ).toThrow(/floats per row/);
    expect(() =>
      c.applyPush(
        {
          ...addPush('short', new Float32Array(dim - 1)),
          tables: [
            {
              t,
              dim: dim - 1,
              keys: new Uint32Array(2),
              grads: new Float32Array(dim - 1),
              counts: Uint32Array.of(1),
            },
          ],
        },
        Date.now(),
      ),
    ).toThrow(/whole/);
    const bad = gradient(dim, 5);
    bad[3] = Number.NaN;
    expect(() => c.applyPush(addPush('nan', bad), Date.now())).toThrow();
    expect(Buffer.from(denseOf(c, t).buffer).equals(Buffer.from(before.buffer))).toBe(true);
    expect(c.version).toBe(0);
  });
});

describe('worker with a dense replica', () => {
  it.each([
    ['float32', false],
    ['binary16 with error feedback', true],
  ])(
    'learns through NATS (rows pulled as binary16), flushes every syncExamples examples (%s) and leaves the shard with its weights',
    async (_, halfFlush) => {
      const config = wideDeep({
        kind: 'adam',
        lr: 0.01,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        biasCorrection: 'table',
      });
      const spec = createModel(config).spec;
      const dense = spec.tables.map((x, i) => (x.kind === 'dense' ? i : -1)).filter((i) => i >= 0);
      const cluster = uniqueName('wdr').replace(/[^A-Za-z0-9_-]/g, '');
      const s = subjects(cluster);
      const jsm = await nats.nc.jetstreamManager();
      await jsm.streams.add({ name: s.feedbackStream, subjects: s.streamSubjects(2) });
      await jsm.streams.add({ name: s.deadLetterStream, subjects: [s.deadLetter] });
      const harness = new ShardHarness(nats.nc, cluster, spec, 2);
      let addPushes = 0;
      let gradientPushesToDense = 0;
      let halfFlushes = 0;
      harness.onApplied = (req) => {
        if (req.add) {
          addPushes++;
          if (req.tables.every((x) => x.half)) halfFlushes++;
        } else if (req.tables.some((x) => dense.includes(x.t))) gradientPushesToDense++;
      };
      harness.startAll();
      const initial = new Map(
        dense.map((t) => [
          t,
          denseOf(
            harness.cores.find((c) => c.o.shard === shardOf(t))!,
            t,
          ),
        ]),
      );
      function shardOf(t: number): number {
        return harness.cores.findIndex((c) => {
          try {
            denseOf(c, t);
            return true;
          } catch {
            return false;
          }
        });
      }
      const w = new Worker(
        smallWorkerOptions(cluster, config, {
          dense: { mode: 'replica', syncExamples: 64, maxDelayMs: 200, halfFlush },
          halfPull: true,
        }),
        { nc: await nats.connect('worker-dense') },
      );
      workers.push(w);
      await w.start();
      const N = 320;
      await publishUserItemPattern(nats.nc, cluster, N);
      // acked events = learned events: the dense part of each is on the shard when it is acked
      await waitFor(
        async () =>
          (await jsm.consumers.list(s.feedbackStream).next()).every(
            (ci) => ci.num_ack_pending === 0 && ci.delivered.stream_seq >= 0,
          ) && harness.examplesApplied >= N,
        {
          timeoutMs: 30_000,
          message: () => `dense examples on the shard ${harness.examplesApplied}/${N}`,
        },
      );
      const st = w.status();
      expect(st.dense).toBeDefined();
      expect(gradientPushesToDense).toBe(0); // dense tables never see a gradient push
      expect(addPushes).toBe(st.dense!.flushes * new Set(dense.map(shardOf)).size);
      // every example's dense update reached the shard exactly once
      expect(harness.examplesApplied).toBe(N * dense.length);
      expect(st.dense!.flushes).toBeLessThan(st.batches); // flushes carry several batches
      // alone, the worker never pulls the tensors back: the shard names the push its load saw as
      // the change before the first flush, and this worker's previous flush before every later one
      expect(st.dense!.flushes).toBeGreaterThan(2);
      expect(st.dense!.refreshes).toBe(0);
      expect(st.dense!.refreshesSkipped).toBe(st.dense!.flushes);
      expect(halfFlushes).toBe(halfFlush ? addPushes : 0);
      await w.stop(5000);
      // the replica's private state, read for this check only
      const replica = (w as unknown as { dense: { rows(t: number): Float32Array } }).dense;
      for (const t of dense) {
        const now = denseOf(harness.cores[shardOf(t)]!, t);
        expect(Buffer.from(now.buffer).equals(Buffer.from(initial.get(t)!.buffer))).toBe(false);
        // without pull-backs the shard still holds what the worker computed (no drift); binary16
        // flushes leave at most the last flush's rounding behind (fed back into the next one)
        // (measured against how far learning moved the tensor, so tiny bias tables count too)
        const mine = replica.rows(t);
        const before = initial.get(t)!;
        let worst = 0;
        let moved = 0;
        for (let i = 0; i < now.length; i++) {
          worst = Math.max(worst, Math.abs(now[i]! - mine[i]!));
          moved = Math.max(moved, Math.abs(now[i]! - before[i]!));
        }
        expect(worst).toBeLessThanOrEqual((halfFlush ? 1e-2 : 1e-4) * moved);
      }
      expect(st.progressive.auc).toBeGreaterThan(0.6);
    },
  );
});

describe('dense replica across a worker crash', () => {
  it('a flush the shard applied but the dead worker never heard of is not applied again by its successor', async () => {
    const config = wideDeep({ kind: 'sgd', lr: 0.05 });
    const spec = createModel(config).spec;
    const dense = spec.tables.map((x, i) => (x.kind === 'dense' ? i : -1)).filter((i) => i >= 0);
    const PARTITIONS = 2;
    const total = 48;
    const cluster = uniqueName('wdc').replace(/[^A-Za-z0-9_-]/g, '');
    const s = subjects(cluster);
    const jsm = await nats.nc.jetstreamManager();
    await jsm.streams.add({ name: s.feedbackStream, subjects: s.streamSubjects(PARTITIONS) });
    await jsm.streams.add({ name: s.deadLetterStream, subjects: [s.deadLetter] });
    const harness = new ShardHarness(nats.nc, cluster, spec, 2);
    // The first flush is applied, and then no push is answered: worker A dies with its flushed
    // batches unacked, as a crash right after the shard's accept would leave them.
    let flushedByA = 0;
    harness.onApplied = (req) => {
      if (req.add && flushedByA === 0) {
        flushedByA = req.examples ?? 0;
        harness.hold = new Promise(() => undefined);
      }
    };
    harness.startAll();
    const options = (id: string, batch: number): WorkerOptionsInput => ({
      cluster,
      id,
      model: config,
      shards: 2,
      partitions: PARTITIONS,
      batch: { size: batch, maxWaitMs: 20 },
      compute: { threads: 1 },
      retry: { attempts: 1000, baseMs: 10, maxMs: 100 },
      lease: { heartbeatMs: 150, ttlMs: 1000 },
      consumer: { nakDelayMs: 50 },
      dense: { mode: 'replica', syncExamples: 16, maxDelayMs: 100 },
    });
    const start = async (o: WorkerOptionsInput) => {
      const nc = await nats.connect('dense-crash');
      conns.push(nc);
      const w = new Worker(o, { nc });
      workers.push(w);
      await w.start();
      return { w, nc };
    };
    const a = await start(options('wa', 8));
    // A keeps its held events alive (working()); once it is dead they come back in 2 s
    await setAckWait(nats.nc, cluster, PARTITIONS, 2000);
    await publishExamples(nats.nc, cluster, 0, total, PARTITIONS);
    await waitFor(() => harness.hold !== undefined, { message: 'worker A flushed once' });
    await new Promise((r) => setTimeout(r, 300));
    expect(a.w.counters.acked).toBe(0);
    expect(flushedByA).toBeGreaterThan(0);
    await a.nc.close(); // "kill -9"
    harness.hold = undefined;

    const b = await start(options('wb', 5));
    await waitFor(() => b.w.partitions.length === PARTITIONS, { message: 'b leases every partition' });
    await waitFor(async () => (await outstanding(nats.nc, cluster, PARTITIONS)) === 0, {
      timeoutMs: 30_000,
      message: () =>
        `every event acked: ${JSON.stringify(b.w.counters)} dense ${JSON.stringify(b.w.status().dense)}`,
    });
    await b.w.stop(5000);
    // every example's dense update on the shards exactly once (each dense push counts its examples per table)
    expect(harness.examplesApplied).toBe(total * dense.length);
    expect(b.w.counters.recoveredBatches).toBeGreaterThan(0);
    // the recovered batches of A's flush were answered `duplicate`
    expect(b.w.status().dense!.duplicateFlushes).toBeGreaterThan(0);
  });
});
