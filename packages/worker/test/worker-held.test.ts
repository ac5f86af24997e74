import { afterAll, describe, expect, it } from 'vitest';
import { ensureStream } from '@freshet/client';
import { createModel } from '@freshet/model';
import { encodeEvent, partitionOf, subjects } from '@freshet/protocol';
import { outstanding, uniqueName, useNats, waitFor } from '@freshet/testkit';
import { Worker } from '../src/worker.js';
import { lrTestModel, ShardHarness } from './shard-harness.js';

/**
 * Held messages outlive a short ack wait: impressions wait 7 s for clicks (the attribution
 * window) on a consumer whose ack wait is 3 s; the worker keeps them with `working()`. Load: 12
 * impressions, no clicks. Counted: redeliveries on the consumers while they are held (none), and
 * the negatives trained once the window closes (12, each event acked once).
 */
const nats = useNats();
const PARTITIONS = 2;
const workers: Worker[] = [];
afterAll(async () => {
  await Promise.allSettled(workers.map((w) => w.stop(1000)));
});

describe('held messages', () => {
  it('stay ours past the ack wait while the joiner holds them', async () => {
    const cluster = uniqueName('held').replace(/[^A-Za-z0-9_-]/g, '');
    const s = subjects(cluster);
    await ensureStream(nats.nc, { cluster, partitions: PARTITIONS });
    const harness = new ShardHarness(nats.nc, cluster, createModel(lrTestModel).spec, 1);
    harness.startAll();
    const w = new Worker(
      {
        cluster,
        id: 'w-held',
        model: lrTestModel,
        shards: 1,
        partitions: PARTITIONS,
        batch: { size: 16, maxWaitMs: 20 },
        compute: { threads: 1 },
        consumer: { ackWaitMs: 3000 },
        joiner: { windowMs: 7000, orphanWaitMs: 1000, maxSkewMs: 1000 },
        joinClock: { everyMs: 50, lagMs: 0 },
      },
      { nc: nats.nc },
    );
    workers.push(w);
    await w.start();
    const N = 12;
    const t0 = Date.now();
    const js = nats.nc.jetstream();
    for (let k = 0; k < N; k++) {
      const user = `u${k}`;
      const ev = encodeEvent({
        kind: 'impression',
        id: `imp${k}`,
        ts: t0,
        user,
        request: `r${k}`,
        item: `i${k}`,
      });
      await js.publish(s.feedback(partitionOf(user, PARTITIONS)), ev);
    }
    await waitFor(() => w.status().joiner.pending === N, { message: 'every impression held' });
    // two ack waits while they are held
    await new Promise((r) => setTimeout(r, 6000));
    const jsm = await nats.nc.jetstreamManager();
    let redelivered = 0;
    for (let p = 0; p < PARTITIONS; p++) {
      redelivered += (await jsm.consumers.info(s.feedbackStream, `freshet-worker-p${p}`)).num_redelivered;
    }
    expect(redelivered).toBe(0);
    expect(w.counters.redelivered).toBe(0);
    expect(w.counters.heldRefreshes).toBeGreaterThanOrEqual(N);
    await waitFor(async () => (await outstanding(nats.nc, cluster, PARTITIONS)) === 0, {
      timeoutMs: 20_000,
      message: 'the window closes and the negatives are trained',
    });
    expect(harness.examplesApplied).toBe(N);
    expect(w.counters.acked).toBe(N);
  }, 60_000);
});
