import { describe, expect, it } from 'vitest';
import type { KV } from 'nats';
import { kvKeys } from '@freshet/nats';
import { subjects } from '@freshet/protocol';
import { uniqueName, useNats } from '@freshet/testkit';
import { encodeManifest, manifestKey, type BatchManifest } from '../src/batch-manifest.js';
import { BatchTiming } from '../src/batch-timing.js';
import { beginEpoch } from '../src/manifest-epochs.js';
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

const manifest = (worker: string, tag?: string): BatchManifest => ({
  v: 1,
  id: `batch-of-${worker}`,
  partition: 0,
  partitions: [0, 1],
  worker,
  ...(tag ? { e: tag } : {}),
  ex: [0, 1].flatMap((p) =>
    Array.from({ length: 6 }, (_, i) => ({ s: [100 * p + i + 1], p, l: i % 2, f: { user: `u${i}` } })),
  ),
});

async function setUp(
  alive: boolean,
  settleMs = 5000,
  cluster = uniqueName('mfr').replace(/[^A-Za-z0-9_-]/g, ''),
) {
  const js = nats.nc.jetstream();
  const kv: KV = await js.views.kv(subjects(cluster).kvBucket, { history: 1 });
  const kvLeader: KV = await js.views.kv(subjects(cluster).kvBucket, { bindOnly: true, allow_direct: false });
  const tag = uniqueName('recoverer');
  const jsm = await nats.nc.jetstreamManager();
  const counters = {} as WorkerCounters;
  counters.recoveredBatches = 0;
  counters.recoveredExamples = 0;
  counters.manifestsUnrecoverable = 0;
  const log = () => undefined;
  const store = new ManifestStore({
    enabled: true,
    worker: 'recoverer',
    tag,
    kv: () => kv,
    counters,
    timing: new BatchTiming(),
    log,
  });
  const pushed: Buffered[][] = [];
  const recovery = new ManifestRecovery({
    enabled: true,
    kv: () => kv,
    kvLeader: () => kvLeader,
    tag,
    keys: (filter) => kvKeys(jsm, subjects(cluster).kvBucket, filter),
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
  return { kv, recovery, pushed, cluster };
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

/**
 * Copies that a dead writer's socket delivers late (a host cut off and back: the kernel sends
 * what the killed process had written), and recoverers that see different copies of one batch.
 * The multi-host test lost 49 of 2,400 examples to the pair: four owners each saw one copy of a
 * late batch, pushed their part under its one id (the first was applied, the rest were
 * duplicates) and acked all of its redeliveries.
 */
describe('manifest recovery of copies stored late', () => {
  it('a copy stored after its writer lost the partition is ignored and deleted', async () => {
    const { kv, recovery, pushed } = await setUp(false);
    const dead = uniqueName('dead');
    // the writer's epoch, then the next owner's (which listed nothing and trained the events)
    await beginEpoch(kv, 0, dead);
    await beginEpoch(kv, 0, uniqueName('next-owner'));
    const single = { ...manifest('dead', dead), partitions: undefined, ex: manifest('dead').ex.slice(0, 6) };
    await kv.put(
      manifestKey(0, 0),
      encodeManifest({ ...single, ex: single.ex.map(({ s, l, f }) => ({ s, l, f })) }),
    );
    await recovery.recover(0, { stop: false });
    expect(pushed).toEqual([]);
    expect((await kv.get(manifestKey(0, 0)))?.operation).not.toBe('PUT');
  });

  it('a copy stored while its writer owned the partition is recovered', async () => {
    const { kv, recovery, pushed } = await setUp(false);
    const dead = uniqueName('dead');
    await beginEpoch(kv, 0, dead);
    await beginEpoch(kv, 1, dead);
    const m = manifest('dead', dead);
    await kv.put(manifestKey(0, 0), encodeManifest(m));
    await kv.put(manifestKey(1, 0), encodeManifest(m));
    await recovery.recover(0, { stop: false });
    expect(pushed.map((b) => b.length)).toEqual([12]);
  });

  it('recoverers that see different copies push the same part: the first one decides', async () => {
    const a = await setUp(false);
    const b = await setUp(false, 5000, a.cluster);
    const dead = uniqueName('dead');
    await beginEpoch(a.kv, 0, dead);
    await beginEpoch(a.kv, 1, dead);
    const m = manifest('dead', dead);
    // A recovers partition 1 while only its copy is stored: partition 1's part, under the id
    await a.kv.put(manifestKey(1, 0), encodeManifest(m));
    await a.recovery.recover(1, { stop: false });
    expect(a.pushed.map((x) => x.length)).toEqual([6]);
    // then partition 0's copy lands (its writer still owned partition 0): B sees both copies,
    // and pushing the whole batch would be a duplicate of A's part that loses partition 0's
    await b.kv.put(manifestKey(0, 0), encodeManifest(m));
    await b.recovery.recover(0, { stop: false });
    expect(b.pushed).toEqual([]);
    expect((await b.kv.get(manifestKey(0, 0)))?.operation).not.toBe('PUT');
  });
});
