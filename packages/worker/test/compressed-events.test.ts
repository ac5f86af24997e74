import { afterAll, describe, expect, it } from 'vitest';
import { Publisher, ensureStream } from '@freshet/client';
import { createModel } from '@freshet/model';
import {
  buildEventDictionary,
  compressEvent,
  encodeEvent,
  eventDictionaryId,
  partitionOf,
  subjects,
  type FeedbackEventInput,
} from '@freshet/protocol';
import { uniqueName, useNats, waitFor } from '@freshet/testkit';
import { Worker } from '../src/worker.js';
import { lrTestModel, ShardHarness, smallWorkerOptions } from './shard-harness.js';

// Compressed events end to end: a publisher stores its dictionary, then sends zlib streams that
// name it; the worker fetches the dictionary on the first such event (handing that event back
// meanwhile) and learns from every one. Events naming a dictionary nobody stored, and broken
// zlib streams, are dead-lettered with their reason; nothing else is lost.

const nats = useNats();
const spec = createModel(lrTestModel).spec;
const PARTITIONS = 2;
const workers: Worker[] = [];
afterAll(async () => {
  await Promise.allSettled(workers.map((w) => w.stop(2000)));
});

const example = (k: number): FeedbackEventInput => ({
  kind: 'example',
  id: `z${k}`,
  ts: Date.now(),
  user: `u${k}`,
  label: k % 3 === 0 ? 1 : 0,
  features: { user: `u${k}`, item: `i${k % 5}` },
});

describe('compressed feedback events', () => {
  it('are learned once their dictionary is fetched; unknown dictionaries and broken streams are dead-lettered', async () => {
    const cluster = uniqueName('wz').replace(/[^A-Za-z0-9_-]/g, '');
    const s = subjects(cluster);
    await ensureStream(nats.nc, { cluster, partitions: PARTITIONS, storage: 'memory' });
    const harness = new ShardHarness(nats.nc, cluster, spec, 1);
    harness.startAll();
    const w = new Worker(
      smallWorkerOptions(cluster, lrTestModel, {
        shards: 1,
        partitions: PARTITIONS,
        consumer: { nakDelayMs: 50 },
      }),
      { nc: await nats.connect('worker-compressed') },
    );
    workers.push(w);
    await w.start();

    const dictionary = buildEventDictionary(
      Array.from({ length: 50 }, (_, k) => encodeEvent(example(1000 + k), 'msgpack')),
    );
    const failures: string[] = [];
    const pub = new Publisher(
      nats.nc,
      { cluster, partitions: PARTITIONS, encoding: 'msgpack', compression: { dictionary } },
      { onError: (e, id) => failures.push(`${id}: ${e.message}`) },
    );
    const N = 60;
    for (let k = 0; k < N; k++) await pub.publish(example(k));
    const stats = await pub.close();
    expect(failures).toEqual([]);
    expect(stats.acked).toBe(N);

    // the stored events are zlib streams naming the dictionary, smaller than the plain events
    const jsm = await nats.nc.jetstreamManager();
    const first = await jsm.streams.getMessage(s.feedbackStream, { seq: 1 });
    expect(first.data[0]).toBe(0x78);
    const plain = encodeEvent(example(0), 'msgpack');
    expect(first.data.length).toBeLessThan(plain.length);

    // a dictionary nobody stored, and a stream cut short
    const js = nats.nc.jetstream();
    const stranger = buildEventDictionary([encodeEvent(example(-1), 'msgpack')]);
    expect(eventDictionaryId(stranger)).not.toBe(eventDictionaryId(dictionary));
    for (const k of [N, N + 1]) {
      const data = compressEvent(encodeEvent(example(k), 'msgpack'), { dictionary: stranger });
      await js.publish(s.labels(partitionOf(`u${k}`, PARTITIONS)), data);
    }
    const cut = compressEvent(encodeEvent(example(N + 2), 'msgpack'), { dictionary }).slice(0, 12);
    await js.publish(s.labels(0), cut);

    await waitFor(
      () =>
        harness.examplesApplied === N &&
        w.status().deadLetters.UNKNOWN_DICTIONARY === 2 &&
        w.status().deadLetters.BAD_ENCODING === 1,
      {
        timeoutMs: 20_000,
        message: () =>
          `applied ${harness.examplesApplied}/${N}, dead letters ${JSON.stringify(w.status().deadLetters)}`,
      },
    );
    await waitFor(() => w.counters.acked === N + 3, { message: () => `all acked (${w.counters.acked})` });
    // the first compressed event of each dictionary waited for its fetch (handed back)
    expect(w.counters.dictionaryWaits).toBeGreaterThanOrEqual(2);
    expect(harness.examplesApplied).toBe(N);
  });
});
