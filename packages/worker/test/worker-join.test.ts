import { afterAll, describe, expect, it } from 'vitest';
import { createModel } from '@freshet/model';
import { ensureStream } from '@freshet/client';
import { encodeEvent, partitionOf, subjects, type FeedbackEventInput } from '@freshet/protocol';
import { outstanding, uniqueName, useNats, waitFor } from '@freshet/testkit';
import { Worker } from '../src/worker.js';
import type { WorkerOptionsInput } from '../src/worker-options.js';
import { mergeProgressive } from '../src/progressive.js';
import { lrTestModel, ShardHarness } from './shard-harness.js';

const nats = useNats();

const modelConfig = lrTestModel;
const model = createModel(modelConfig);
const PARTITIONS = 4;
const WINDOW = 6000;

const workers: Worker[] = [];
afterAll(async () => {
  await Promise.allSettled(workers.map((w) => w.stop(2000)));
});

/** Table 0 key of an item id (the wide table holds one weight per categorical value). */
function itemKey(item: string): string {
  const b = model.encode([{ features: { item }, label: 0 }]);
  const s = b.sparse.find((x) => x.table === 0)!;
  return `${s.keys[0]}:${s.keys[1]}`;
}

async function startWorker(cluster: string, id: string): Promise<Worker> {
  const o: WorkerOptionsInput = {
    cluster,
    id,
    model: modelConfig,
    shards: 2,
    partitions: PARTITIONS,
    batch: { size: 16, maxWaitMs: 20 },
    compute: { threads: 1 },
    retry: { attempts: 1000, baseMs: 10, maxMs: 100 },
    lease: { heartbeatMs: 150, ttlMs: 1000 },
    consumer: { nakDelayMs: 50 },
    joiner: { windowMs: WINDOW, orphanWaitMs: 1000, maxSkewMs: 1000 },
    joinClock: { everyMs: 50, lagMs: 0 },
  };
  const w = new Worker(o, {
    nc: await nats.connect(`join-${id}`),
    log: process.env.FRESHET_TEST_LOG ? (l, m, f) => console.error(l, m, JSON.stringify(f)) : undefined,
  });
  workers.push(w);
  await w.start();
  return w;
}

describe('worker with the joiner', () => {
  it('joins impressions and clicks, dead-letters bad input, acks every event, survives a worker swap mid-window', async () => {
    const cluster = uniqueName('wj').replace(/[^A-Za-z0-9_-]/g, '');
    const s = subjects(cluster);
    await ensureStream(nats.nc, { cluster, partitions: PARTITIONS, storage: 'memory' });
    const jsm = await nats.nc.jetstreamManager();
    const js = nats.nc.jetstream();
    const harness = new ShardHarness(nats.nc, cluster, model.spec, 2);
    // Each impression has its own item, so the wide weight of that item is touched by exactly its
    // one example: the sign of its gradient (p − y) says which label reached the shard.
    const applied = new Map<string, number[]>();
    harness.onApplied = (req) => {
      for (const t of req.tables) {
        if (t.t !== 0) continue;
        for (let i = 0; i < t.keys.length / 2; i++) {
          const k = `${t.keys[2 * i]}:${t.keys[2 * i + 1]}`;
          const l = applied.get(k) ?? [];
          for (let c = 0; c < t.counts[i]!; c++) l.push(t.grads[i]! < 0 ? 1 : 0);
          applied.set(k, l);
        }
      }
    };
    harness.startAll();

    const publish = async (e: FeedbackEventInput | string) => {
      const user = typeof e === 'string' ? 'u0' : e.user;
      const data = typeof e === 'string' ? new TextEncoder().encode(e) : encodeEvent(e);
      await js.publish(s.feedback(partitionOf(user, PARTITIONS)), data);
    };
    const a = await startWorker(cluster, 'ja');
    const N = 40;
    const t0 = Date.now();
    const imp = (k: number): FeedbackEventInput => ({
      kind: 'impression',
      id: `imp${k}`,
      ts: t0 + k,
      user: `u${k % 8}`,
      request: `r${k}`,
      item: `it${k}`,
      position: k % 5,
      features: { x: 1 },
    });
    const click = (k: number, dt: number): FeedbackEventInput => ({
      kind: 'click',
      id: `clk${k}`,
      ts: t0 + k + dt,
      user: `u${k % 8}`,
      request: `r${k}`,
      item: `it${k}`,
    });
    // k%4: 0 click after its impression, 1 click published before it (out of order),
    // 2 click only after the worker swap, 3 never clicked (a negative at window end).
    const expected = new Map<string, number>();
    for (let k = 0; k < N; k++) expected.set(itemKey(`it${k}`), k % 4 === 3 ? 0 : 1);

    for (let k = 0; k < N; k++) {
      if (k % 4 === 1) await publish(click(k, 300));
      await publish(imp(k));
      if (k % 4 === 0) await publish(click(k, 200));
      if (k % 8 === 0) await publish(click(k, 200)); // duplicate click (same event id)
      if (k % 10 === 0) await publish(imp(k)); // duplicate impression
    }
    const bad = [
      'not json at all',
      JSON.stringify({ kind: 'bogus', id: 'x1', ts: t0, user: 'u1' }),
      '{"kind":"click","id":"x2","ts":NaN,"user":"u2","request":"r","item":"i"}',
      JSON.stringify({ kind: 'click', ts: t0, user: 'u3', request: 'r', item: 'i' }),
      JSON.stringify({ kind: 'click', id: 'x4', ts: t0 + 3_600_000, user: 'u4', request: 'r', item: 'i' }),
    ];
    for (const b of bad) await publish(b);

    // A learns the positives of the first phase; their impressions and clicks are acked, the
    // rest stay pending in its joiner (and unacked) when it stops mid-window.
    const phaseA = [...expected.entries()].filter(([, l]) => l === 1).length - N / 4;
    const positivesApplied = () => [...expected.keys()].filter((k) => applied.get(k)?.[0] === 1).length;
    await waitFor(() => positivesApplied() >= phaseA, {
      message: () => `phase-A positives applied: ${positivesApplied()}`,
    });
    await waitFor(() => a.counters.deadLettered === bad.length, {
      message: () => `dead letters: ${a.counters.deadLettered}`,
    });
    const sa = a.status();
    expect(Date.now() - t0).toBeLessThan(WINDOW); // still mid-window: no negatives yet
    expect(sa.joiner.negatives).toBe(0);
    expect(sa.joiner.pending).toBe(N / 2);
    expect(sa.joiner.retainedMessages).toBe(N / 2);
    expect(sa.joiner.dropped.DUPLICATE).toBe(N / 8 + N / 10);
    expect(sa.deadLetters).toMatchObject({
      BAD_JSON: 1,
      UNKNOWN_KIND: 1,
      NON_FINITE: 1,
      MISSING_FIELD: 1,
      TS_FUTURE: 1,
    });
    await a.stop();

    // B re-joins the impressions A handed back; the late clicks find them pending.
    const b = await startWorker(cluster, 'jb');
    await waitFor(() => b.partitions.length === PARTITIONS, { message: 'b owns every partition' });
    for (let k = 2; k < N; k += 4) await publish(click(k, 1500));
    const itemsApplied = () => [...expected.keys()].filter((k) => applied.has(k)).length;
    await waitFor(() => itemsApplied() === N, {
      timeoutMs: WINDOW + 10_000,
      message: () => `items applied: ${itemsApplied()} of ${N}`,
    });
    await waitFor(async () => (await outstanding(nats.nc, cluster, PARTITIONS)) === 0, {
      message: () => `every event acked; a: ${JSON.stringify(a.counters)} b: ${JSON.stringify(b.counters)}`,
    });
    // every impression's example reached the shards exactly once, with the right label
    for (const [key, label] of expected) expect(applied.get(key), key).toEqual([label]);
    expect(harness.duplicates.reduce((x, y) => x + y, 0)).toBe(0);
    const sb = b.status();
    expect(sb.joiner.negatives).toBe(N / 4);
    expect(sb.joiner.positives).toBe(N / 4);
    expect(sa.joiner.positives + sb.joiner.positives).toBe((3 * N) / 4);
    expect(b.counters.deadLettered).toBe(0);

    // the dead letters are stored with their reasons
    const dl = await jsm.streams.info(s.deadLetterStream);
    expect(dl.state.messages).toBe(bad.length);
    const reasons: string[] = [];
    for (let q = dl.state.first_seq; q <= dl.state.last_seq; q++) {
      const m = await jsm.streams.getMessage(s.deadLetterStream, { seq: q });
      reasons.push(m.header.get('Freshet-Reason'));
    }
    expect(reasons.sort()).toEqual(['BAD_JSON', 'MISSING_FIELD', 'NON_FINITE', 'TS_FUTURE', 'UNKNOWN_KIND']);

    // status: timings and mergeable progressive metrics
    expect(sb.timing.batches).toBeGreaterThan(0);
    expect(sb.timing.compute.p50).toBeGreaterThan(0);
    const merged = mergeProgressive([sa.progressiveHistogram, sb.progressiveHistogram]);
    expect(merged.examples).toBe(N);
    expect(merged.examples).toBe(sa.progressive.examples + sb.progressive.examples);
    await b.stop();
  });
});
