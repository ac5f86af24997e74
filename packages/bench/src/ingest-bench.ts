import { Ingest, DeadLetters, ensureStream, Publisher, syntheticEvents } from '@freshet/client';
import { connectNats, natsServerVersion, startNatsServer, type NatsServerHandle } from '@freshet/nats';
import {
  compileParseOptions,
  encodeEvent,
  parseEvent,
  subjects,
  type FeedbackEvent,
  type FeedbackEventInput,
} from '@freshet/protocol';
import { Joiner } from '@freshet/worker';

/** Options of {@link runIngestBench} (the CLI's `freshet bench ingest`). */
export interface IngestBenchOptions {
  /** Events through validation + joiner, in process (default 200k). */
  events?: number;
  /** Events published to JetStream and acked (default 50k). */
  publishEvents?: number;
  /** A nats-server URL; by default a local one is started (and stopped) for the bench. */
  url?: string;
  maxInFlight?: number;
  encoding?: 'json' | 'msgpack';
  seed?: number;
}

const rate = (n: number, ms: number) => Math.round((n / ms) * 1000);

/**
 * Ingest throughput, as one JSON object: events/s through validation (parseEvent) and the joiner
 * in one thread, and published-and-acked events/s into JetStream over loopback with the
 * Publisher. The events are synthetic impressions and clicks (≈15% CTR), re-stamped to now.
 */
export async function runIngestBench(opts: IngestBenchOptions = {}): Promise<Record<string, unknown>> {
  const n = opts.events ?? 200_000;
  const nPub = opts.publishEvents ?? 50_000;
  const encoding = opts.encoding ?? 'json';
  const now = Date.now();
  const slate = 5;
  const raw: FeedbackEventInput[] = [];
  const requests = Math.ceil(n / slate);
  for (const e of syntheticEvents({
    seed: opts.seed ?? 1,
    requests,
    users: 5000,
    items: 2000,
    intervalMs: 1,
    startTs: now - requests,
  })) {
    raw.push(e);
    if (raw.length >= n) break;
  }
  const bytes = raw.map((e) => encodeEvent(e, encoding));
  const parse = compileParseOptions({ now: now + 60_000 });

  // Validation alone.
  let t = performance.now();
  const parsed: FeedbackEvent[] = [];
  for (const b of bytes) {
    const r = parseEvent(b, parse);
    if (r.ok) parsed.push(r.event);
  }
  const validateMs = performance.now() - t;
  // Joiner alone.
  let joiner = new Joiner({ rateLimit: { enabled: true } });
  t = performance.now();
  let examples = 0;
  for (const e of parsed) examples += joiner.push(e).length;
  examples += joiner.flush().length;
  const joinMs = performance.now() - t;
  // Both, as a worker runs them.
  joiner = new Joiner();
  t = performance.now();
  for (const b of bytes) {
    const r = parseEvent(b, parse);
    if (r.ok) joiner.push(r.event);
  }
  joiner.flush();
  const bothMs = performance.now() - t;
  const snapT = performance.now();
  const snapBytes = JSON.stringify(joiner.snapshot()).length;
  const snapshotMs = performance.now() - snapT;

  // Published and acked into JetStream over loopback.
  let server: NatsServerHandle | undefined;
  const url = opts.url ?? (server = await startNatsServer({ jetstream: true })).url;
  const nc = await connectNats({ servers: url }, 'freshet-bench-ingest');
  try {
    const cluster = `bench_${Date.now().toString(36)}`;
    await ensureStream(nc, { cluster, partitions: 8 });
    const pub = new Publisher(nc, { cluster, partitions: 8, maxInFlight: opts.maxInFlight ?? 512, encoding });
    const evs = raw.slice(0, nPub);
    t = performance.now();
    for (const e of evs) await pub.publish(e);
    const stats = await pub.close();
    const pubMs = performance.now() - t;
    // And read back through the DLQ-aware validator, as a worker's first stage does.
    const ingest = new Ingest(new DeadLetters(nc, { cluster }), { now: now + 60_000 });
    const js = nc.jetstream();
    const jsm = await nc.jetstreamManager();
    const s = subjects(cluster);
    await jsm.consumers.add(s.feedbackStream, { durable_name: 'bench', ack_policy: 'none' as never });
    const consumer = await js.consumers.get(s.feedbackStream, 'bench');
    t = performance.now();
    let consumed = 0;
    const j2 = new Joiner();
    while (consumed < stats.acked) {
      const batch = await consumer.fetch({ max_messages: 1000, expires: 2000 });
      for await (const m of batch) {
        const e = await ingest.validate(m);
        if (e) j2.push(e);
        consumed++;
      }
    }
    const consumeMs = performance.now() - t;
    return {
      bench: 'ingest',
      events: n,
      encoding,
      validateEventsPerSec: rate(n, validateMs),
      joinEventsPerSec: rate(parsed.length, joinMs),
      validateJoinEventsPerSec: rate(n, bothMs),
      examples,
      joinerSnapshotBytes: snapBytes,
      joinerSnapshotMs: Math.round(snapshotMs),
      publishEvents: evs.length,
      publishAcked: stats.acked,
      publishFailed: stats.failed,
      maxInFlight: pub.options.maxInFlight,
      publishAckedEventsPerSec: rate(stats.acked, pubMs),
      consumeValidateJoinEventsPerSec: rate(consumed, consumeMs),
      natsServer: opts.url ? 'external' : natsServerVersion(),
      node: process.version,
    };
  } finally {
    await nc.drain();
    await server?.stop();
  }
}
