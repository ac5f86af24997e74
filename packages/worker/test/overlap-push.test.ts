import { afterAll, describe, expect, it } from 'vitest';
import { createModel } from '@freshet/model';
import { decodeFrame, subjects } from '@freshet/protocol';
import { uniqueName, useNats, waitFor } from '@freshet/testkit';
import { Worker } from '../src/worker.js';
import {
  publishUserItemPattern,
  ShardHarness,
  wideDeepTestModel,
  smallWorkerOptions,
} from './shard-harness.js';

/**
 * `overlapPush`: the next batch starts once a push is sent, not answered. Real nats-server,
 * real shard state; the shards hold their push replies so the overlap is visible. Each pull
 * must still reach the shards behind the previous batch's push (no staleness), and the number
 * of batches waiting on an answer is bounded.
 */
const nats = useNats();
const workers: Worker[] = [];
afterAll(async () => {
  await Promise.allSettled(workers.map((w) => w.stop(2000)));
});

const config = wideDeepTestModel({ kind: 'adam', lr: 0.02 });
const N = 320;

async function run(overlapPush: boolean) {
  const spec = createModel(config).spec;
  const cluster = uniqueName('ovp').replace(/[^A-Za-z0-9_-]/g, '');
  const s = subjects(cluster);
  const jsm = await nats.nc.jetstreamManager();
  await jsm.streams.add({ name: s.feedbackStream, subjects: s.streamSubjects(2) });
  await jsm.streams.add({ name: s.deadLetterStream, subjects: [s.deadLetter] });
  const harness = new ShardHarness(nats.nc, cluster, spec, 2);
  let open!: () => void;
  harness.hold = new Promise<void>((r) => (open = r));
  harness.startAll();
  /** Batches (push ids without the shard suffix) applied by any shard. */
  const batches = new Set<string>();
  harness.onApplied = (req) => batches.add(req.id.replace(/\.s\d+$/, ''));
  // the order the shards' connection receives pulls and pushes in (one subscriber, all shards)
  const order: ('pull' | 'push')[] = [];
  const pullSub = nats.nc.subscribe(s.pull(0).replace(/\.0\.pull$/, '.*.pull'), {
    callback: () => order.push('pull'),
  });
  const pushSub = nats.nc.subscribe(s.push(0).replace(/\.0\.push$/, '.*.push'), {
    callback: (_e, m) => {
      decodeFrame(m.data); // a push frame, not something else on the subject
      order.push('push');
    },
  });
  expect(pullSub.getSubject()).not.toBe(s.pull(0));
  const w = new Worker(smallWorkerOptions(cluster, config, { overlapPush }), {
    nc: await nats.connect(`worker-overlap-${overlapPush}`),
  });
  workers.push(w);
  await w.start();
  const publishing = publishUserItemPattern(nats.nc, cluster, N);
  await waitFor(() => batches.size >= 1, { timeoutMs: 20_000, message: () => `${batches.size} batches` });
  // what starts while every push is unanswered
  await new Promise((r) => setTimeout(r, 600));
  const whileHeld = batches.size;
  open();
  harness.hold = undefined;
  await publishing;
  const denseTables = spec.tables.filter((t) => t.kind === 'dense').length;
  await waitFor(() => w.status().examples >= N && harness.examplesApplied >= N * denseTables, {
    timeoutMs: 30_000,
    message: () => `learned ${w.status().examples}/${N}, applied ${harness.examplesApplied}`,
  });
  pullSub.unsubscribe();
  pushSub.unsubscribe();
  await w.stop(2000);
  // the harness sums the examples of every dense table's pushes
  const applied = harness.examplesApplied / denseTables;
  return { whileHeld, order, applied, counters: w.counters, examples: w.status().examples };
}

describe('overlapPush', () => {
  it('starts the next batch once a push is sent, its pull behind that push, never more than one ahead', async () => {
    const r = await run(true);
    // the first batch's push waits for its answer, the second batch ran meanwhile, a third did not
    expect(r.whileHeld).toBe(2);
    // every push was applied before the next batch's pull was read: no staleness added
    expect(r.counters.maxStaleness).toBe(0);
    // pulls of a batch never follow a pull of the next one without its pushes in between: the
    // kinds alternate in runs of at most one message per shard
    const runs: { kind: string; n: number }[] = [];
    for (const k of r.order) {
      const last = runs.at(-1);
      if (last?.kind === k) last.n++;
      else runs.push({ kind: k, n: 1 });
    }
    expect(runs[0]!.kind).toBe('pull');
    expect(Math.max(...runs.map((x) => x.n))).toBeLessThanOrEqual(2);
    // each example applied exactly once
    expect(r.applied).toBe(N);
    expect(r.examples).toBe(N);
  });

  it('control: without it nothing starts while a push is unanswered', async () => {
    const r = await run(false);
    expect(r.whileHeld).toBe(1);
    expect(r.counters.maxStaleness).toBe(0);
    expect(r.applied).toBe(N);
  });
});
