import type { NatsConnection } from 'nats';
import { setTimeout as sleep } from 'node:timers/promises';
import { connectNats, type NatsOptionsInput } from '@freshet/nats';
import {
  buildEventDictionary,
  encodeEvent,
  FreshetError,
  subjects,
  type FeedbackEventInput,
} from '@freshet/protocol';
import { openDataset, type OpenDatasetOptions } from './datasets/index.js';
import type { CsvSpecInput } from './datasets/csv-spec.js';
import { Publisher } from './publisher.js';
import { ensureStream, streamPartitions } from './stream.js';

/** Options of {@link runReplay}. */
export interface ReplayOptions {
  /** `criteo:PATH | movielens:PATH | obd:PATH | csv:PATH | synthetic[:k=v,...]`. */
  data: string;
  /** The csv spec (object or JSON file path). */
  spec?: CsvSpecInput | string;
  /** Events per second (wall clock); exclusive with `speedup`. */
  rate?: number;
  /** Replay the dataset's own time `speedup`× faster than it happened. */
  speedup?: number;
  /** A connection, or options to open one (closed at the end). */
  nats: NatsConnection | NatsOptionsInput;
  cluster: string;
  partitions?: number;
  /** Create/update the stream first (default true). */
  ensure?: boolean;
  signal?: AbortSignal;
  onProgress?: (p: ReplayProgress) => void;
  /** Progress every this many ms (default 250). */
  progressEveryMs?: number;
  /** Stop after this many events. */
  limit?: number;
  /**
   * Keep the dataset's timestamps. By default events are re-stamped to "now" (rate or as fast as
   * possible) or to now + scaled offset (speedup), so live validation accepts them; the original
   * time is kept in `meta.srcTs`.
   */
  keepTimestamps?: boolean;
  /** Event id prefix; defaults to one per run, so two runs do not dedupe each other. */
  idPrefix?: string;
  criteoMode?: OpenDatasetOptions['criteoMode'];
  maxInFlight?: number;
  encoding?: 'json' | 'msgpack';
  /** Compress the events (see the Publisher's `compression`; e.g. {@link datasetDictionary}'s). */
  compression?: { dictionary?: Uint8Array; level?: number };
}

export interface ReplayProgress {
  events: number;
  acked: number;
  elapsedMs: number;
  eventsPerSec: number;
  /** Dataset time reached (original timestamps). */
  datasetTs: number;
}

/** What a replay did: the lead's `freshet replay` prints it. */
export interface ReplaySummary {
  data: string;
  cluster: string;
  events: number;
  acked: number;
  duplicates: number;
  failed: number;
  byKind: Record<string, number>;
  elapsedMs: number;
  eventsPerSec: number;
  firstDatasetTs?: number;
  lastDatasetTs?: number;
  aborted: boolean;
}

/** An event as a replay publishes it: stamped `ts`, its dataset time kept in `meta.srcTs`. */
export function restamped(e: FeedbackEventInput, ts: number): FeedbackEventInput {
  return { ...e, ts, meta: { ...(e.meta ?? {}), srcTs: e.ts } };
}

/** The id prefix a replay of `data` gives its events by default (one per run). */
function replayIdPrefix(data: string): string {
  return `${data.split(':')[0]}-${Date.now().toString(36)}`;
}

/**
 * A preset dictionary for compressed replays (event-compression.ts of @freshet/protocol): `samples`
 * events of the dataset after the first `skip`, encoded as {@link runReplay} publishes them (so
 * ids, timestamps and field names look alike). Sample events a run will not send (`skip` past its
 * `limit`) keep a measurement of the compression honest.
 */
export async function datasetDictionary(o: {
  data: string;
  spec?: CsvSpecInput | string;
  criteoMode?: OpenDatasetOptions['criteoMode'];
  skip?: number;
  samples: number;
  encoding?: 'json' | 'msgpack';
  /** The ids' prefix, as the publisher's will be (a replay's default otherwise). */
  idPrefix?: string;
}): Promise<Uint8Array> {
  const dsOpts: OpenDatasetOptions = { idPrefix: o.idPrefix ?? replayIdPrefix(o.data) };
  if (o.spec !== undefined) dsOpts.spec = o.spec;
  if (o.criteoMode !== undefined) dsOpts.criteoMode = o.criteoMode;
  const out: Uint8Array[] = [];
  let seen = 0;
  for await (const e of openDataset(o.data, dsOpts)) {
    if (seen++ < (o.skip ?? 0)) continue;
    out.push(encodeEvent(restamped(e, Date.now()), o.encoding ?? 'json'));
    if (out.length >= o.samples) break;
  }
  if (out.length === 0)
    throw new FreshetError('CONFIG', `no sample events in ${o.data} after ${o.skip ?? 0}`);
  return buildEventDictionary(out);
}

const isConnection = (x: NatsConnection | NatsOptionsInput): x is NatsConnection =>
  typeof (x as NatsConnection).publish === 'function';

/**
 * Publishes a dataset as events in time order through a {@link Publisher}, paced by `rate` or
 * `speedup` (or as fast as acks allow), and returns a summary once every event is acked.
 */
export async function runReplay(o: ReplayOptions): Promise<ReplaySummary> {
  if (o.rate !== undefined && o.speedup !== undefined) {
    throw new FreshetError('CONFIG', 'replay: give rate or speedup, not both');
  }
  if ((o.rate !== undefined && !(o.rate > 0)) || (o.speedup !== undefined && !(o.speedup > 0))) {
    throw new FreshetError('CONFIG', 'replay: rate and speedup must be positive');
  }
  const own = !isConnection(o.nats);
  // replays carry labelled examples: the labeller role's inbox unless the options say otherwise
  const nc = isConnection(o.nats)
    ? o.nats
    : await connectNats(o.nats, 'freshet-replay', {
        inboxPrefix: subjects(o.cluster).inboxPrefix('labeller'),
      });
  let partitions = o.partitions ?? 8;
  const prefix = o.idPrefix ?? replayIdPrefix(o.data);
  const byKind: Record<string, number> = {};
  let events = 0;
  let first: number | undefined;
  let last: number | undefined;
  let aborted = false;
  const started = performance.now();
  const wallStart = Date.now();
  try {
    // An existing stream fixes the partition count: events routed by another count would land
    // on partitions no worker consumes (or be refused), while the replay reported success.
    const existing = await streamPartitions(nc, o.cluster).catch(() => undefined);
    if (existing !== undefined) {
      if (o.partitions !== undefined && o.partitions !== existing)
        throw new FreshetError(
          'CONFIG',
          `cluster ${o.cluster}'s stream has ${existing} partitions, not ${o.partitions}: ` +
            'leave --partitions out (replay routes as the stream does) or use a new cluster',
        );
      partitions = existing;
    }
    if (o.ensure !== false) await ensureStream(nc, { cluster: o.cluster, partitions });
    const pub = new Publisher(nc, {
      cluster: o.cluster,
      partitions,
      maxInFlight: o.maxInFlight ?? 512,
      encoding: o.encoding ?? 'json',
      ...(o.compression ? { compression: o.compression } : {}),
    });
    const dsOpts: OpenDatasetOptions = { idPrefix: prefix };
    if (o.spec !== undefined) dsOpts.spec = o.spec;
    if (o.criteoMode !== undefined) dsOpts.criteoMode = o.criteoMode;
    const every = o.progressEveryMs ?? 250;
    let nextProgress = started + every;
    const progress = () => {
      const elapsedMs = performance.now() - started;
      o.onProgress?.({
        events,
        acked: pub.stats().acked + pub.stats().duplicates,
        elapsedMs,
        eventsPerSec: events / Math.max(elapsedMs / 1000, 1e-3),
        datasetTs: last ?? 0,
      });
    };
    for await (const e of openDataset(o.data, dsOpts)) {
      if (o.signal?.aborted) {
        aborted = true;
        break;
      }
      if (o.limit !== undefined && events >= o.limit) break;
      const src = e.ts;
      first ??= src;
      last = src;
      // Pace: wait until this event's wall time comes.
      let due: number | undefined;
      if (o.rate !== undefined) due = started + (events / o.rate) * 1000;
      else if (o.speedup !== undefined) due = started + (src - first) / o.speedup;
      if (due !== undefined) {
        const wait = due - performance.now();
        if (wait > 1)
          await sleep(wait, undefined, o.signal ? { signal: o.signal } : {}).catch(() => undefined);
      }
      let out: FeedbackEventInput = e;
      if (!o.keepTimestamps) {
        const ts = o.speedup !== undefined ? wallStart + Math.round((src - first) / o.speedup) : Date.now();
        out = restamped(e, ts);
      }
      await pub.publish(out);
      events++;
      byKind[e.kind] = (byKind[e.kind] ?? 0) + 1;
      if (o.onProgress && performance.now() >= nextProgress) {
        progress();
        nextProgress = performance.now() + every;
      }
    }
    const stats = await pub.close();
    progress();
    const elapsedMs = performance.now() - started;
    const summary: ReplaySummary = {
      data: o.data,
      cluster: o.cluster,
      events,
      acked: stats.acked,
      duplicates: stats.duplicates,
      failed: stats.failed,
      byKind,
      elapsedMs: Math.round(elapsedMs),
      eventsPerSec: Math.round(events / Math.max(elapsedMs / 1000, 1e-3)),
      aborted,
    };
    if (first !== undefined) summary.firstDatasetTs = first;
    if (last !== undefined) summary.lastDatasetTs = last;
    return summary;
  } finally {
    if (own) await nc.drain();
  }
}
