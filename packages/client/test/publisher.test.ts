import { describe, expect, it } from 'vitest';
import {
  eventDictionaryId,
  partitionOf,
  subjects,
  hasCode,
  type FeedbackEventInput,
} from '@freshet/protocol';
import { uniqueName, useNats } from '@freshet/testkit';
import { ensureStream, Publisher, publishLive, streamPartitions } from '../src/index.js';

const nats = useNats();
const cluster = () => uniqueName('pub').replace(/[^A-Za-z0-9_-]/g, '_');
const click = (i: number, user = `u${i % 37}`): FeedbackEventInput => ({
  id: `ev-${i}`,
  ts: Date.now(),
  user,
  kind: 'click',
  request: `r${i}`,
  item: `i${i % 11}`,
});

describe('ensureStream', () => {
  it('creates the feedback and dead-letter streams and the KV bucket, then is idempotent, and updates on change', async () => {
    const c = cluster();
    const first = await ensureStream(nats.nc, { cluster: c, partitions: 4 });
    expect(first).toMatchObject({
      feedback: 'created',
      deadLetter: 'created',
      kv: 'created',
      dictionaries: 'created',
      partitions: 4,
    });
    const again = await ensureStream(nats.nc, { cluster: c, partitions: 4 });
    expect(again).toMatchObject({
      feedback: 'unchanged',
      deadLetter: 'unchanged',
      kv: 'unchanged',
      dictionaries: 'unchanged',
    });
    const more = await ensureStream(nats.nc, { cluster: c, partitions: 6, maxAgeMs: 3600_000 });
    expect(more.feedback).toBe('updated');
    expect(await streamPartitions(nats.nc, c)).toBe(6);
    const jsm = await nats.nc.jetstreamManager();
    const info = await jsm.streams.info(subjects(c).feedbackStream);
    expect(info.config.subjects).toEqual([
      ...[0, 1, 2, 3, 4, 5].map((p) => subjects(c).feedback(p)),
      ...[0, 1, 2, 3, 4, 5].map((p) => subjects(c).labels(p)),
    ]);
    expect(info.config.max_age).toBe(3600_000 * 1e6);
    // bounded by default: 2 GiB on file storage, oldest dropped first
    expect(info.config.max_bytes).toBe(2 * 1024 ** 3);
    expect(info.config.discard).toBe('old');
    const full = await ensureStream(nats.nc, {
      cluster: c,
      partitions: 6,
      maxAgeMs: 3600_000,
      maxBytes: 1 << 20,
      discard: 'new',
    });
    expect(full.feedback).toBe('updated');
    const after = await jsm.streams.info(subjects(c).feedbackStream);
    expect([after.config.max_bytes, after.config.discard]).toEqual([1 << 20, 'new']);
  });

  it('survives concurrent callers', async () => {
    const c = cluster();
    const r = await Promise.all([1, 2, 3, 4].map(() => ensureStream(nats.nc, { cluster: c, partitions: 3 })));
    // JetStream treats an identical concurrent add as success; all callers see the stream.
    for (const x of r) expect(['created', 'unchanged']).toContain(x.feedback);
    expect(await streamPartitions(nats.nc, c)).toBe(3);
  });

  it('rejects bad options with CONFIG', async () => {
    await expect(ensureStream(nats.nc, { cluster: 'bad name!' })).rejects.toSatisfy((e) =>
      hasCode(e, 'CONFIG'),
    );
    await expect(ensureStream(nats.nc, { cluster: 'x', partitions: 0 })).rejects.toThrow(/partitions/);
  });
});

describe('Publisher', () => {
  it('publishes every event once, partitioned by user, and dedupes resent ids', async () => {
    const c = cluster();
    await ensureStream(nats.nc, { cluster: c, partitions: 4 });
    const pub = new Publisher(nats.nc, { cluster: c, partitions: 4, maxInFlight: 64, maxBuffered: 256 });
    for (let i = 0; i < 2000; i++) await pub.publish(click(i));
    for (let i = 0; i < 50; i++) await pub.publish(click(i)); // a publisher restart resending
    const stats = await pub.close();
    expect(stats).toMatchObject({ buffered: 2050, acked: 2000, duplicates: 50, failed: 0 });
    expect(pub.state).toBe('stopped');
    const jsm = await nats.nc.jetstreamManager();
    const s = subjects(c);
    const info = await jsm.streams.info(s.feedbackStream, { subjects_filter: '>' });
    expect(info.state.messages).toBe(2000);
    const want: Record<string, number> = {};
    for (let i = 0; i < 2000; i++) {
      const subj = s.feedback(partitionOf(`u${i % 37}`, 4));
      want[subj] = (want[subj] ?? 0) + 1;
    }
    expect(info.state.subjects).toEqual(want);
    // The body is the portable JSON form.
    const m = await jsm.streams.getMessage(s.feedbackStream, { seq: 1 });
    expect(JSON.parse(new TextDecoder().decode(m.data))).toMatchObject({ id: 'ev-0', kind: 'click', v: 1 });
  });

  it('applies backpressure: waits when full, or throws OVERLOADED in reject mode', async () => {
    const c = cluster();
    await ensureStream(nats.nc, { cluster: c, partitions: 2 });
    const reject = new Publisher(nats.nc, {
      cluster: c,
      partitions: 2,
      maxInFlight: 1,
      maxBuffered: 4,
      whenFull: 'reject',
    });
    let overloaded = 0;
    for (let i = 0; i < 100; i++) {
      try {
        await reject.publish(click(i));
      } catch (e) {
        if (hasCode(e, 'OVERLOADED')) overloaded++;
        else throw e;
      }
    }
    expect(overloaded).toBeGreaterThan(0);
    expect(reject.buffered).toBeLessThanOrEqual(4);
    expect(reject.tryPublish(click(1000))).toBe(false);
    const rs = await reject.close();
    expect(rs.acked).toBe(100 - overloaded);

    const wait = new Publisher(nats.nc, { cluster: c, partitions: 2, maxInFlight: 2, maxBuffered: 3 });
    let maxSeen = 0;
    for (let i = 0; i < 300; i++) {
      await wait.publish(click(10_000 + i));
      maxSeen = Math.max(maxSeen, wait.buffered);
    }
    expect(maxSeen).toBeLessThanOrEqual(3);
    expect((await wait.close()).acked).toBe(300);
  });

  it('rejects invalid events with BAD_EVENT and publishes after close with SHUTTING_DOWN', async () => {
    const c = cluster();
    await ensureStream(nats.nc, { cluster: c, partitions: 1 });
    const pub = new Publisher(nats.nc, { cluster: c, partitions: 1 });
    await expect(pub.publish({ ...click(1), ts: Number.NaN })).rejects.toSatisfy((e) =>
      hasCode(e, 'BAD_EVENT'),
    );
    await pub.close();
    await expect(pub.publish(click(2))).rejects.toSatisfy((e) => hasCode(e, 'SHUTTING_DOWN'));
  });

  it('closes on abort, flushing what was buffered', async () => {
    const c = cluster();
    await ensureStream(nats.nc, { cluster: c, partitions: 1 });
    const ac = new AbortController();
    const pub = new Publisher(nats.nc, { cluster: c, partitions: 1 }, { signal: ac.signal });
    for (let i = 0; i < 100; i++) await pub.publish(click(i));
    ac.abort();
    const stats = await pub.close();
    expect(stats.acked).toBe(100);
    expect(() => pub.tryPublish(click(101))).toThrow(/closed/);
  });

  it('retries and reports failures when nobody stores the subject', async () => {
    const c = cluster(); // no stream: every publish gets "no responders"
    const errors: string[] = [];
    const pub = new Publisher(
      nats.nc,
      { cluster: c, partitions: 1, maxRetries: 2, retryBackoffMs: 1, ackTimeoutMs: 500 },
      { onError: (e) => errors.push(e.code) },
    );
    await pub.publish(click(1));
    const stats = await pub.close();
    expect(stats).toMatchObject({ failed: 1, retries: 2, acked: 0 });
    expect(errors).toEqual(['UNAVAILABLE']);
  });

  it('fails its events, and refuses more, when its dictionary cannot be stored; sends nothing before', async () => {
    const c = cluster();
    await ensureStream(nats.nc, { cluster: c, partitions: 1, storage: 'memory' });
    expect(
      () => new Publisher(nats.nc, { cluster: c, compression: { dictionary: new Uint8Array(40 * 1024) } }),
    ).toThrow(/32768 bytes/);
    // the dictionary's id already names other bytes (written by other tools)
    const dictionary = new TextEncoder().encode('{"kind":"click","request":"r","item":"i"}');
    const kv = await nats.nc.jetstream().views.kv(subjects(c).dictBucket, { bindOnly: true });
    await kv.put(eventDictionaryId(dictionary), new TextEncoder().encode('something else'));
    const errors: string[] = [];
    const pub = new Publisher(
      nats.nc,
      { cluster: c, partitions: 1, compression: { dictionary } },
      { onError: (e) => errors.push(e.code) },
    );
    await pub.publish(click(1)); // buffered while the dictionary is stored
    const stats = await pub.flush();
    expect(stats).toMatchObject({ failed: 1, acked: 0 });
    expect(errors).toEqual(['CONFLICT']);
    await expect(pub.publish(click(2))).rejects.toMatchObject({ code: 'CONFLICT' });
    expect(pub.failure?.code).toBe('CONFLICT');
    const jsm = await nats.nc.jetstreamManager();
    expect((await jsm.streams.info(subjects(c).feedbackStream)).state.messages).toBe(0);
  });
});

describe('publishLive', () => {
  it('publishes each event at its timestamp, in order, and stops when aborted', async () => {
    const c = cluster();
    await ensureStream(nats.nc, { cluster: c, partitions: 1 });
    const pub = new Publisher(nats.nc, { cluster: c, partitions: 1 });
    const t0 = Date.now();
    const events = [0, 100, 200, 300].map((dt, i) => ({ ...click(i), ts: t0 + dt }));
    const at: number[] = [];
    const n = await publishLive(pub, events, { each: () => void at.push(Date.now() - t0) });
    expect(n).toBe(4);
    at.forEach((t, i) => expect(t).toBeGreaterThanOrEqual(events[i]!.ts - t0));

    const ac = new AbortController();
    const later = [0, 50, 100].map((dt, i) => ({ ...click(10 + i), ts: Date.now() + dt }));
    expect(await publishLive(pub, later, { signal: ac.signal, each: () => ac.abort() })).toBe(1);
    expect((await pub.close()).acked).toBe(5);
  });
});
