import { AckPolicy, type NatsConnection } from 'nats';
import { describe, expect, it } from 'vitest';
import { encodeEvent, subjects, type DeadLetterReason, type FeedbackEvent } from '@freshet/protocol';
import { uniqueName, useNats } from '@freshet/testkit';
import { DeadLetters, deadLetterHeaders, ensureStream, Ingest } from '../src/index.js';

const nats = useNats();
const te = new TextEncoder();
const now = () => Date.now();
const valid = (id: string) =>
  te.encode(JSON.stringify({ id, ts: now(), user: 'u1', kind: 'click', request: 'r', item: 'i' }));
const json = (o: Record<string, unknown>) =>
  te.encode(
    JSON.stringify({ id: 'bad', ts: now(), user: 'u1', kind: 'click', request: 'r', item: 'i', ...o }),
  );

/**
 * Publishes [valid, bad, valid] raw to a fresh cluster's stream, consumes it with a durable pull
 * consumer through Ingest, and returns what was accepted and what the dead-letter stream holds.
 */
async function pipeline(nc: NatsConnection, bad: Uint8Array) {
  const cluster = uniqueName('ing').replace(/[^A-Za-z0-9_-]/g, '_');
  const s = subjects(cluster);
  const topo = await ensureStream(nc, { cluster, partitions: 1 });
  const js = nc.jetstream();
  await js.publish(s.feedback(0), valid('before'));
  await js.publish(s.feedback(0), bad);
  await js.publish(s.feedback(0), valid('after'));
  const jsm = await nc.jetstreamManager();
  await jsm.consumers.add(topo.stream, { durable_name: 'w', ack_policy: AckPolicy.Explicit });
  const consumer = await js.consumers.get(topo.stream, 'w');
  const ingest = new Ingest(new DeadLetters(nc, { cluster }), { maxSkewMs: 60_000, maxAgeMs: 3600_000 });
  const accepted: FeedbackEvent[] = [];
  const msgs = await consumer.fetch({ max_messages: 3, expires: 2000 });
  for await (const m of msgs) {
    const e = await ingest.validate(m); // a JsMsg is an IngestMessage
    if (e) accepted.push(e);
    m.ack();
  }
  const info = await jsm.streams.info(topo.deadLetterStream);
  const dl =
    info.state.messages > 0 ? await jsm.streams.getMessage(topo.deadLetterStream, { seq: 1 }) : undefined;
  return {
    accepted,
    dlCount: info.state.messages,
    dl,
    counters: ingest.counters(),
    dead: ingest.deadLetters,
  };
}

const cases: [string, () => Uint8Array, DeadLetterReason][] = [
  ['malformed JSON', () => te.encode('{"id":"x","kind":"click",'), 'BAD_JSON'],
  ['not JSON at all', () => te.encode('click!'), 'BAD_JSON'],
  ['binary garbage', () => new Uint8Array([0, 1, 2, 3, 250]), 'BAD_ENCODING'],
  ['wrong types', () => json({ ts: 'now' }), 'BAD_TYPE'],
  ['missing event id', () => json({ id: undefined }), 'MISSING_FIELD'],
  ['missing user id', () => json({ user: undefined }), 'MISSING_FIELD'],
  ['unknown kind', () => json({ kind: 'like' }), 'UNKNOWN_KIND'],
  [
    'NaN',
    () => te.encode(`{"id":"x","ts":NaN,"user":"u","kind":"click","request":"r","item":"i"}`),
    'NON_FINITE',
  ],
  [
    'Infinity',
    () => te.encode(`{"id":"x","ts":1e400,"user":"u","kind":"click","request":"r","item":"i"}`),
    'NON_FINITE',
  ],
  [
    'NaN in msgpack',
    () =>
      encodeEvent(
        { id: 'x', ts: now(), user: 'u', kind: 'dwell', request: 'r', item: 'i', ms: NaN },
        'msgpack',
      ),
    'NON_FINITE',
  ],
  ['huge string', () => json({ kind: 'impression', query: 'x'.repeat(10_000) }), 'OVERSIZE'],
  ['huge payload', () => json({ junk: 'y'.repeat(200_000) }), 'OVERSIZE'],
  ['timestamp far in the future', () => json({ ts: now() + 24 * 3600_000 }), 'TS_FUTURE'],
  ['timestamp far in the past', () => json({ ts: now() - 30 * 24 * 3600_000 }), 'TS_PAST'],
  ['unsupported version', () => json({ v: 9 }), 'UNSUPPORTED_VERSION'],
];

describe('bad input is dead-lettered, counted, and does not stop valid events', () => {
  it.each(cases)('%s → %s', async (_name, make, reason) => {
    const bad = make();
    const r = await pipeline(nats.nc, bad);
    expect(r.accepted.map((e) => e.id)).toEqual(['before', 'after']);
    expect(r.dlCount).toBe(1);
    expect(r.dl?.header.get(deadLetterHeaders.reason)).toBe(reason);
    expect(r.dl?.header.get(deadLetterHeaders.message)).not.toBe('');
    expect(r.dl?.header.get(deadLetterHeaders.sourceSeq)).toBe('2');
    expect(r.dl?.data.byteLength).toBe(Math.min(bad.byteLength, 256 * 1024));
    expect(r.counters.accepted).toBe(2);
    expect(r.counters.rejected[reason]).toBe(1);
    expect(r.dead.counts()[reason]).toBe(1);
    expect(r.dead.total).toBe(1);
  });

  it('stores a redelivered bad message once (dedupe on the source sequence)', async () => {
    const cluster = uniqueName('ing').replace(/[^A-Za-z0-9_-]/g, '_');
    const topo = await ensureStream(nats.nc, { cluster, partitions: 1 });
    const d = new DeadLetters(nats.nc, { cluster, maxPayloadBytes: 4 });
    const msg = { reason: 'BAD_JSON' as const, message: 'line1\r\nline2' };
    await d.send(te.encode('{{{{{{'), msg, { subject: 's', seq: 7 });
    await d.send(te.encode('{{{{{{'), msg, { subject: 's', seq: 7 });
    const jsm = await nats.nc.jetstreamManager();
    expect((await jsm.streams.info(topo.deadLetterStream)).state.messages).toBe(1);
    const m = await jsm.streams.getMessage(topo.deadLetterStream, { seq: 1 });
    expect(m.header.get(deadLetterHeaders.truncated)).toBe('6');
    expect(m.header.get(deadLetterHeaders.message)).toBe('line1 line2');
    expect(m.data.byteLength).toBe(4);
  });
});
