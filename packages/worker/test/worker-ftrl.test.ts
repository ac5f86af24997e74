import { afterAll, describe, expect, it } from 'vitest';
import { createModel, ftrlSequential, type Example } from '@freshet/model';
import { parseModelSpec, subjects, type PullRequest } from '@freshet/protocol';
import { ShardCore } from '@freshet/shard';
import { publishExamples, uniqueName, useNats, waitFor } from '@freshet/testkit';
import { Worker } from '../src/worker.js';
import { ShardHarness } from './shard-harness.js';

// The lr model's FTRL runs per example on the workers: a real worker pulls w, z, n through NATS,
// trains its batches one example at a time and pushes what it added to z and n. One partition
// and one batch in flight make that exactly per-example FTRL over the stream, whatever the batch
// boundaries: the shard's z and n must equal one pass of the reference over all examples.

const nats = useNats();
const model = {
  kind: 'lr' as const,
  features: {
    fields: [
      { kind: 'categorical' as const, name: 'user' },
      { kind: 'categorical' as const, name: 'item' },
    ],
  },
  optimizer: { kind: 'ftrl' as const, alpha: 0.1, beta: 1, l1: 0.2, l2: 0.5 },
};
const compiled = createModel(model);
const workers: Worker[] = [];
afterAll(async () => {
  await Promise.allSettled(workers.map((w) => w.stop(2000)));
});

const N = 240;
const user = (k: number) => `u${k % 12}`;
const item = (k: number) => `i${(k * 7) % 5}`;
// users with an even index click items 0-1, the others items 2-4
const label = (k: number) => (((k % 12) % 2 === 0) === (k * 7) % 5 < 2 ? 1 : 0);

describe('worker with sequential FTRL', () => {
  it('trains through NATS to the state of per-example FTRL over the stream', async () => {
    expect(compiled.spec.tables.every((t) => t.optimizer.kind === 'ftrl' && t.optimizer.sequential)).toBe(
      true,
    );
    const cluster = uniqueName('wf').replace(/[^A-Za-z0-9_-]/g, '');
    const s = subjects(cluster);
    const jsm = await nats.nc.jetstreamManager();
    await jsm.streams.add({ name: s.feedbackStream, subjects: s.streamSubjects(1) });
    await jsm.streams.add({ name: s.deadLetterStream, subjects: [s.deadLetter] });
    const harness = new ShardHarness(nats.nc, cluster, compiled.spec, 1);
    harness.startAll();
    const w = new Worker(
      {
        cluster,
        model,
        shards: 1,
        partitions: 1,
        batch: { size: 256, maxWaitMs: 15 },
        compute: { threads: 1 },
      },
      { nc: await nats.connect('worker-ftrl') },
    );
    workers.push(w);
    await w.start();
    // in pieces, so the stream is cut into several batches
    for (let k = 0; k < N; k += 40) {
      await publishExamples(nats.nc, cluster, k, 40, 1, {
        user,
        label,
        features: (i, u) => ({ user: u, item: item(i) }),
      });
      await new Promise((r) => setTimeout(r, 30));
    }
    await waitFor(() => harness.examplesApplied === N, {
      message: () => `${N} applied (got ${harness.examplesApplied})`,
    });
    expect(harness.applied[0]).toBeGreaterThan(1); // more than one push: batches were cut

    // the reference: every example in stream order, from the initial state
    const examples: Example[] = Array.from({ length: N }, (_, k) => ({
      features: { user: user(k), item: item(k) },
      label: label(k),
    }));
    const batch = compiled.encode(examples);
    const req: PullRequest = { state: true, tables: [] };
    for (const sp of batch.sparse) req.tables.push({ t: sp.table, keys: sp.keys });
    for (const t of batch.denseTables) req.tables.push({ t, keys: new Uint32Array(2) });
    const fresh = new ShardCore({
      spec: parseModelSpec(compiled.spec),
      shard: 0,
      shards: 1,
      checkOwnership: false,
      maxPushRows: 1 << 16,
      maxPullKeys: 1 << 16,
      sketchWidth: 1 << 10,
      recentPushIds: 10,
      dcMaxWorkers: 1,
      dcMaxRowsPerWorker: 1 << 10,
    }).pull(req);
    const rows: Float32Array[] = [];
    for (const t of fresh.tables) rows[t.t] = t.values;
    const ref = ftrlSequential(compiled, batch, rows);
    const trained = harness.cores[0]!.pull(req);
    let maxDiff = 0;
    let maxAbs = 0;
    for (const t of trained.tables) {
      const dim = t.dim / 3;
      const d = ref.grads[t.t]!;
      const start = rows[t.t]!;
      for (let r = 0; r < t.values.length / t.dim; r++) {
        for (let k = 0; k < dim; k++) {
          for (const [part, at] of [
            [1, 0],
            [2, dim],
          ] as const) {
            const got = t.values[r * t.dim + part * dim + k]!;
            const want = start[r * t.dim + part * dim + k]! + d[r * 2 * dim + at + k]!;
            maxDiff = Math.max(maxDiff, Math.abs(got - want));
            maxAbs = Math.max(maxAbs, Math.abs(want));
          }
        }
      }
    }
    expect(maxAbs).toBeGreaterThan(1); // state moved well away from its start
    expect(maxDiff).toBeLessThan(1e-3);
    expect(w.status().deadLetters.NON_FINITE ?? 0).toBe(0);
  }, 60_000);
});
