import { describe, expect, it } from 'vitest';
import type { KV } from 'nats';
import { subjects } from '@freshet/protocol';
import { uniqueName, useNats } from '@freshet/testkit';
import { encodeManifest, manifestKey, type BatchManifest } from '../src/batch-manifest.js';
import { BatchTiming } from '../src/batch-timing.js';
import { ManifestRecovery } from '../src/manifest-recovery.js';
import { ManifestStore } from '../src/manifest-store.js';
import type { Buffered, WorkerCounters } from '../src/worker-types.js';

/**
 * A batch of partitions 0 and 1 whose manifest copy of partition 0 is stored and whose copy of
 * partition 1 is not (yet). Its writer either died while storing them (the batch was never
 * pushed: recover the stored part) or is alive and still storing them, because the partition
 * moved without a crash (it will push the batch whole: pushing part of it under its id first
 * would make that push a duplicate and lose the rest). Real KV bucket, recovery alone.
 */
const nats = useNats();

const manifest = (worker: string): BatchManifest => ({
  v: 1,
  id: `batch-of-${worker}`,
  partition: 0,
  partitions: [0, 1],
  worker,
  ex: [0, 1].flatMap((p) =>
    Array.from({ length: 6 }, (_, i) => ({ s: [100 * p + i + 1], p, l: i % 2, f: { user: `u${i}` } })),
  ),
});

async function setUp(alive: boolean, settleMs = 5000) {
  const cluster = uniqueName('mfr').replace(/[^A-Za-z0-9_-]/g, '');
  const kv: KV = await nats.nc.jetstream().views.kv(subjects(cluster).kvBucket, { history: 1 });
  const counters = {} as WorkerCounters;
  counters.recoveredBatches = 0;
  counters.recoveredExamples = 0;
  counters.manifestsUnrecoverable = 0;
  const log = () => undefined;
  const store = new ManifestStore({
    enabled: true,
    worker: 'recoverer',
    kv: () => kv,
    counters,
    timing: new BatchTiming(),
    log,
  });
  const pushed: Buffered[][] = [];
  const recovery = new ManifestRecovery({
    enabled: true,
    kv: () => kv,
    jsm: () => undefined,
    feedbackStream: 'unused',
    store,
    parts: new Map(),
    counters,
    signal: new AbortController().signal,
    log,
    runBatch: (items) => {
      pushed.push(items);
      return Promise.resolve(true);
    },
    holdMs: 60_000,
    isAlive: () => alive,
    settleMs,
  });
  return { kv, recovery, pushed };
}

describe('manifest recovery of a batch stored in part', () => {
  it('its writer died while storing it: the stored part is recovered at once', async () => {
    const { kv, recovery, pushed } = await setUp(false);
    const m = manifest('dead');
    await kv.put(manifestKey(0, 0), encodeManifest(m));
    const t0 = Date.now();
    await recovery.recover(0, { stop: false });
    expect(pushed.map((b) => b.length)).toEqual([6]);
    expect(Date.now() - t0).toBeLessThan(2000);
  });

  it('its writer is alive and its other copy lands late: recovered whole, not in part', async () => {
    const { kv, recovery, pushed } = await setUp(true);
    const m = manifest('alive');
    await kv.put(manifestKey(0, 0), encodeManifest(m));
    const late = new Promise<void>((resolve) =>
      setTimeout(() => void kv.put(manifestKey(1, 0), encodeManifest(m)).then(() => resolve()), 400),
    );
    await recovery.recover(0, { stop: false });
    await late;
    expect(pushed.map((b) => b.length)).toEqual([12]);
  });

  it('its writer is alive and settles the batch meanwhile (the copy goes): nothing is re-pushed', async () => {
    const { kv, recovery, pushed } = await setUp(true);
    await kv.put(manifestKey(0, 0), encodeManifest(manifest('alive')));
    setTimeout(() => void kv.delete(manifestKey(0, 0)), 400);
    await recovery.recover(0, { stop: false });
    expect(pushed).toEqual([]);
  });

  it('its writer stays alive but never stores the other copy: the stored part after settleMs', async () => {
    const { kv, recovery, pushed } = await setUp(true, 600);
    await kv.put(manifestKey(0, 0), encodeManifest(manifest('alive')));
    const t0 = Date.now();
    await recovery.recover(0, { stop: false });
    expect(Date.now() - t0).toBeGreaterThanOrEqual(600);
    expect(pushed.map((b) => b.length)).toEqual([6]);
  });
});
