import {
  AckPolicy,
  DeliverPolicy,
  headers as natsHeaders,
  nanos,
  type Consumer,
  type JetStreamClient,
  type JetStreamManager,
  type JsMsg,
  type KV,
  type NatsConnection,
  type Service,
} from 'nats';
import { connectNats } from '@freshet/nats';
import { createModel, type Example, type Model } from '@freshet/model';
import { DeadLetters } from '@freshet/client';
import {
  compileParseOptions,
  deadLetterReasons,
  FreshetError,
  hashString64,
  hasCode,
  parseEvent,
  subjects,
  type DeadLetterReason,
  type FeedbackEvent,
  type Features,
  type Subjects,
} from '@freshet/protocol';
import {
  decodeManifest,
  encodeManifest,
  manifestFilter,
  manifestKey,
  type BatchManifest,
  type ManifestExample,
} from './batch-manifest.js';
import { BatchTiming, type BatchTimingSnapshot } from './batch-timing.js';
import { ComputePool } from './compute-pool.js';
import { Joiner, type JoinedExample, type JoinerCounters, type JoinerDropReason } from './joiner.js';
import { LrSchedule } from './lr-schedule.js';
import { PartitionLeases } from './partition-leases.js';
import { PullFeed } from './pull-feed.js';
import { ProgressiveMetrics, type ProgressiveHistogram, type ProgressiveSnapshot } from './progressive.js';
import { allFinite, ShardClient } from './shard-client.js';
import { compileWorkerOptions, type WorkerOptions, type WorkerOptionsInput } from './worker-options.js';

/** Actor states (DESIGN.md): explicit, observable, one way. */
export type WorkerState = 'idle' | 'starting' | 'running' | 'draining' | 'stopped' | 'failed';

/** What the NATS service API reports for a worker. */
export interface WorkerStatus {
  id: string;
  cluster: string;
  state: WorkerState;
  partitions: number[];
  members: string[];
  backend: string;
  examples: number;
  /** Over the last 10 s. */
  examplesPerS: number;
  batches: number;
  inFlightBatches: number;
  bufferedEvents: number;
  progressive: ProgressiveSnapshot;
  lrScale: number;
  lrLowered: number;
  /** Events not yet delivered to this worker, per owned partition (consumer num_pending). */
  lag?: Record<string, number>;
  counters: WorkerCounters;
  /** Per-batch time breakdown (p50/p90 over the last 256 batches, and an EWMA). */
  timing: BatchTimingSnapshot;
  /** Joiner counters summed over every partition this worker has joined, plus current state sizes. */
  joiner: JoinerStatus;
  /** Dead letters stored by this worker, by reason (all reasons present). */
  deadLetters: Record<DeadLetterReason, number>;
  /** Cumulative progressive metrics in a mergeable form: merge workers with `mergeProgressive`. */
  progressiveHistogram: ProgressiveHistogram;
}

/** The joiner part of a worker's status. */
export interface JoinerStatus extends JoinerCounters {
  /** Pending impressions and orphan positives held now, over owned partitions. */
  pending: number;
  orphans: number;
  /** Messages held unacked because the joiner holds their events. */
  retainedMessages: number;
}

export interface WorkerCounters {
  acked: number;
  naked: number;
  deadLettered: number;
  /** Dead letters that could not be stored (the event was handed back for redelivery). */
  deadLetterFailures: number;
  /** Feedback events the joiner consumed without producing or holding an example (see `joiner.dropped`). */
  ignored: number;
  /** Redeliveries of an event this worker still held (kept once, not fed twice). */
  redelivered: number;
  /** Joined examples put back in the buffer after their batch failed (their events stay held). */
  requeued: number;
  pushes: number;
  pushDuplicates: number;
  staleRounds: number;
  retries: number;
  failedBatches: number;
  nonFiniteBatches: number;
  maxStaleness: number;
  /** Batch manifests stored in KV (one per batch) and puts that failed (the batch was retried). */
  manifestPuts: number;
  manifestFailures: number;
  /** Batches of a previous owner re-formed from their manifests and pushed again under their id. */
  recoveredBatches: number;
  recoveredExamples: number;
  /** Redelivered messages acked at once because a recovered batch already applied them. */
  recoveredAcks: number;
  /** Manifests whose events could no longer be read from the stream (their examples were dropped). */
  manifestsUnrecoverable: number;
}

/** Things a caller may hand a worker instead of letting it create them (tests, the CLI). */
export interface WorkerDeps {
  /** An open connection to use (not closed by stop()); otherwise one is opened from options.nats. */
  nc?: NatsConnection;
  signal?: AbortSignal;
  /** Structured log lines (the CLI prints them); silent by default. */
  log?: (level: 'info' | 'warn' | 'error', msg: string, fields?: Record<string, unknown>) => void;
}

/**
 * A fetched message until it is acked or naked. It is acked when the last thing that needs it
 * goes: its admission, the joiner holding its event, the example it contributed to (until every
 * shard accepted that example's gradient), or its dead letter (until stored).
 */
interface Tracked {
  msg: JsMsg;
  seq: number;
  part: PartitionState;
  refs: number;
  /** Hand back (nak) instead of ack when the last reference goes. */
  nak: boolean;
}

/** Per leased partition: its joiner and the messages fetched from it and not yet settled. */
interface PartitionState {
  partition: number;
  joiner: Joiner;
  /** By stream sequence, so a redelivery of a message we still hold is recognised. */
  tracked: Map<number, Tracked>;
  /** Messages whose events the joiner holds (pending impressions, orphan positives), by event id. */
  retained: Map<string, Tracked>;
  /** The last message fetched had nothing behind it (or a fetch came back empty). */
  caughtUp: boolean;
  /** Let go of: its joiner is no longer fed or advanced. */
  closed: boolean;
  idle: (() => void)[];
  /**
   * Stream sequences that a batch recovered from a manifest has applied: their redeliveries are
   * acked on arrival instead of being trained again.
   */
  recovered: Set<number>;
}

/** A partition's fetch loop. */
interface Fetching {
  stop: boolean;
  /** Leased again while this loop was being stopped: start a new one once it is let go. */
  restart: boolean;
  done: Promise<void>;
}

interface Buffered {
  partition: number;
  example: Example;
  /** The messages this example came from (1 or 2: an impression and its positive). */
  deps: Tracked[];
  /** Identifies the example by its messages: the batch's push id is a hash of these. */
  key: string;
  /** Produced by the joiner: it cannot be re-derived from a redelivery to this worker. */
  joined: boolean;
  /** Local receive time (batch max-wait). */
  at: number;
}

/** A batch's manifest in KV: its key, and the put in flight or the revision it was stored at. */
interface ManifestHandle {
  key: string;
  partition: number;
  /** This worker's slot (absent for a recovered manifest of another owner). */
  slot?: number;
  bytes?: Uint8Array;
  put?: Promise<number> | undefined;
  revision?: number;
}

/** Recovery reads events back that passed validation once: their age and skew no longer matter. */
const recoveryParse = compileParseOptions({ maxSkewMs: Number.MAX_SAFE_INTEGER, maxAgeMs: Infinity });

/** A batch re-formed from a manifest: pushed under its original id, holding no messages. */
interface Recovered {
  id: string;
  key: string;
  revision: number;
  eventTs: number | undefined;
}

/**
 * When an example's label became known, for freshness (event → serving): the publication of its
 * newest message (a pre-labelled event, or the click that made an impression positive), or, for a
 * joined negative, the moment the joiner closed its attribution window. Measuring negatives from
 * the impression would count the window itself as staleness.
 */
function labelKnownAt(b: Buffered): number {
  if (b.joined && b.example.label <= 0) return b.at;
  let newest = Number.NEGATIVE_INFINITY;
  for (const d of b.deps) newest = Math.max(newest, Number(d.msg.info.timestampNanos / 1_000_000));
  return Number.isFinite(newest) ? newest : b.at;
}

class Semaphore {
  private free: number;
  private readonly waiters: (() => void)[] = [];
  constructor(n: number) {
    this.free = n;
  }
  async acquire(): Promise<void> {
    if (this.free > 0) {
      this.free--;
      return;
    }
    await new Promise<void>((r) => this.waiters.push(r));
  }
  release(): void {
    const w = this.waiters.shift();
    if (w) w();
    else this.free++;
  }
}

const scratch = new Uint32Array(2);
const hex = (n: number) => n.toString(16).padStart(8, '0');

/**
 * The gradient worker actor: leases feedback partitions, batches their events, pulls rows from
 * the shards, computes gradients in a piscina pool, pushes them and acks the events only after
 * every shard accepted its part. See the package README for the guarantees.
 */
export class Worker {
  readonly options: WorkerOptions;
  private readonly subj: Subjects;
  private readonly deps: WorkerDeps;
  private _state: WorkerState = 'idle';
  private nc: NatsConnection | undefined;
  private ownNc = false;
  private js: JetStreamClient | undefined;
  private kv: KV | undefined;
  private jsm: JetStreamManager | undefined;
  private model: Model | undefined;
  private pool: ComputePool | undefined;
  private client: ShardClient | undefined;
  private leases: PartitionLeases | undefined;
  private service: Service | undefined;
  private readonly consumers = new Map<number, Consumer>();
  private readonly fetching = new Map<number, Fetching>();
  private readonly parts = new Map<number, PartitionState>();
  private dlq: DeadLetters | undefined;
  private readonly dlCounts = Object.fromEntries(deadLetterReasons.map((r) => [r, 0])) as Record<
    DeadLetterReason,
    number
  >;
  /** Counters of joiners of partitions already let go of (status sums them with live ones). */
  private joinerPast: JoinerCounters | undefined;
  private joinTimer: ReturnType<typeof setInterval> | undefined;
  private readonly timing = new BatchTiming();
  private buffer: Buffered[] = [];
  /** Buffered examples per partition (batches are single-partition). */
  private readonly bufferedOf = new Map<number, number>();
  /** Buffer room promised to fetches still open (messages not yet arrived). */
  private reservedRoom = 0;
  /** Manifest slots in use per partition (keys `mf.<partition>.<slot>`). */
  private readonly manifestSlots = new Map<number, Set<number>>();
  /** Manifest keys of earlier owners being recovered now: no new batch may take those slots. */
  private readonly recovering = new Set<string>();
  private bufferSpace: (() => void)[] = [];
  private bufferFilled: (() => void) | undefined;
  private readonly inFlight = new Set<Promise<unknown>>();
  private readonly slots: Semaphore;
  private batcherDone: Promise<void> | undefined;
  private readonly abort = new AbortController();
  private stopping: Promise<void> | undefined;
  private readonly metrics: ProgressiveMetrics;
  private readonly lr: LrSchedule;
  private readonly rate: { t: number; n: number }[] = [];
  private clock = 0;
  private readonly parseOpts;
  readonly counters: WorkerCounters = {
    acked: 0,
    naked: 0,
    deadLettered: 0,
    deadLetterFailures: 0,
    ignored: 0,
    redelivered: 0,
    requeued: 0,
    pushes: 0,
    pushDuplicates: 0,
    staleRounds: 0,
    retries: 0,
    failedBatches: 0,
    nonFiniteBatches: 0,
    maxStaleness: 0,
    manifestPuts: 0,
    manifestFailures: 0,
    recoveredBatches: 0,
    recoveredExamples: 0,
    recoveredAcks: 0,
    manifestsUnrecoverable: 0,
  };

  constructor(options: WorkerOptionsInput | WorkerOptions, deps: WorkerDeps = {}) {
    this.options = compileWorkerOptions(options as WorkerOptionsInput);
    this.subj = subjects(this.options.cluster);
    this.deps = deps;
    this.slots = new Semaphore(this.options.maxInFlightBatches);
    this.metrics = new ProgressiveMetrics({ window: this.options.metrics.window });
    this.lr = new LrSchedule(this.options.lr);
    const v = this.options.validation;
    this.parseOpts = compileParseOptions({ maxSkewMs: v.maxSkewMs, maxAgeMs: v.maxAgeMs ?? Infinity });
  }

  get state(): WorkerState {
    return this._state;
  }
  get id(): string {
    return this.options.id;
  }
  /** Partitions currently leased by this worker. */
  get partitions(): number[] {
    return this.leases?.partitions ?? [];
  }
  /** Progressive-validation metrics so far. */
  progressive(): ProgressiveSnapshot {
    return this.metrics.snapshot();
  }

  private log(level: 'info' | 'warn' | 'error', msg: string, fields?: Record<string, unknown>) {
    this.deps.log?.(level, msg, { worker: this.id, ...fields });
  }

  /** Connects, starts the compute threads, ensures consumers, takes leases, starts consuming. */
  async start(): Promise<void> {
    if (this._state !== 'idle') throw new FreshetError('CONFIG', `worker ${this.id} already ${this._state}`);
    this._state = 'starting';
    const o = this.options;
    try {
      this.model = createModel(o.model as never);
      this.nc = this.deps.nc ?? (await connectNats(o.nats, `freshet-worker-${o.id}`));
      this.ownNc = !this.deps.nc;
      const jsm = await this.nc.jetstreamManager();
      this.jsm = jsm;
      this.js = this.nc.jetstream();
      await this.waitForStream(jsm);
      for (let p = 0; p < o.partitions; p++) {
        const durable = `${o.consumer.durablePrefix}-p${p}`;
        const cfg = {
          durable_name: durable,
          filter_subject: this.subj.feedback(p),
          ack_policy: AckPolicy.Explicit,
          deliver_policy: DeliverPolicy.All,
          ack_wait: nanos(o.consumer.ackWaitMs),
          max_ack_pending: o.consumer.maxAckPending,
        };
        try {
          await jsm.consumers.add(this.subj.feedbackStream, cfg);
        } catch {
          // exists with another config (e.g. an older ack wait): keep it, it is shared by all workers
        }
        this.consumers.set(p, await this.js.consumers.get(this.subj.feedbackStream, durable));
      }
      this.kv = await this.js.views.kv(this.subj.kvBucket, { history: 1 });
      this.dlq = new DeadLetters(this.nc, { cluster: o.cluster });
      this.pool = await ComputePool.create({
        model: this.model.config,
        threads: o.compute.threads,
        maxQueue: o.compute.maxQueue,
      });
      this.client = new ShardClient(this.nc, {
        cluster: o.cluster,
        shards: o.shards,
        spec: this.model.spec,
        worker: o.id,
        timeoutMs: o.requestTimeoutMs,
        retry: o.retry,
        denseCacheMaxLag: o.denseCacheMaxLag,
        signal: this.abort.signal,
      });
      this.batcherDone = this.batcher();
      this.leases = new PartitionLeases(
        {
          kv: this.kv,
          worker: o.id,
          partitions: o.partitions,
          heartbeatMs: o.lease.heartbeatMs,
          ttlMs: o.lease.ttlMs,
        },
        {
          acquired: (p) => this.startFetching(p),
          release: (p) => this.handOver(p),
          lost: (p) => void this.letGo(p),
        },
      );
      this.joinTimer = setInterval(() => this.advanceJoiners(), o.joinClock.everyMs);
      await this.leases.start();
      this.service = await this.nc.services.add({
        name: this.subj.serviceName('worker'),
        version: '0.1.0',
        description: 'Freshet gradient worker',
        metadata: { cluster: o.cluster, role: 'worker', id: o.id },
        statsHandler: () => this.statusWithLag(),
      });
      this.service.addEndpoint('status', {
        subject: `${this.subj.prefix}.worker.${o.id}.status`,
        handler: (err, msg) => {
          if (err) return;
          void this.statusWithLag().then((s) => msg.respond(JSON.stringify(s)));
        },
      });
      this._state = 'running';
      this.deps.signal?.addEventListener('abort', () => void this.stop(), { once: true });
      this.log('info', 'worker running', { partitions: this.partitions, backend: this.pool.backend });
    } catch (e) {
      this._state = 'failed';
      await this.teardown();
      throw e;
    }
  }

  private async waitForStream(jsm: Awaited<ReturnType<NatsConnection['jetstreamManager']>>) {
    const deadline = Date.now() + 30_000;
    for (;;) {
      try {
        await jsm.streams.info(this.subj.feedbackStream);
        return;
      } catch (e) {
        if (Date.now() > deadline || this.deps.signal?.aborted) {
          throw new FreshetError('NOT_READY', `feedback stream ${this.subj.feedbackStream} not found`, {
            cause: e,
          });
        }
        await new Promise((r) => setTimeout(r, 250));
      }
    }
  }

  // ------------------------------------------------------------------ fetching

  private startFetching(p: number): void {
    if (this._state === 'draining' || this._state === 'stopped') return;
    const cur = this.fetching.get(p);
    if (cur) {
      // Lost and leased again before the old loop ran out (a renewal failed while NATS was
      // unsettled): ignoring the acquire would leave the partition leased and never fetched.
      if (cur.stop) cur.restart = true;
      return;
    }
    const old = this.parts.get(p);
    if (!old || old.closed) {
      // A fresh joiner: whatever an earlier owner (or we) held unacked is redelivered and re-joined.
      this.parts.set(p, this.newPartition(p, old));
    }
    const entry: Fetching = { stop: false, restart: false, done: Promise.resolve() };
    entry.done = this.recoverManifests(p, entry)
      .then(() => this.fetchLoop(p, entry))
      .catch((e: unknown) => {
        this.log('warn', 'fetch loop ended', { partition: p, error: String(e) });
      });
    this.fetching.set(p, entry);
    this.log('info', 'partition acquired', { partition: p });
  }

  private newPartition(p: number, old: PartitionState | undefined): PartitionState {
    const ps: PartitionState = {
      partition: p,
      joiner: undefined as unknown as Joiner,
      // messages of the previous incarnation still settling keep their own state object
      tracked: new Map(),
      retained: new Map(),
      caughtUp: false,
      closed: false,
      idle: [],
      recovered: new Set(),
    };
    ps.joiner = new Joiner(this.options.joiner, { released: (id) => this.unretain(ps, id) });
    if (old) this.absorbJoiner(old);
    return ps;
  }

  private async stopFetching(p: number): Promise<void> {
    const f = this.fetching.get(p);
    if (!f) return;
    // The open pull request is left to run out (≤ fetchExpiresMs): closing its subscription
    // earlier would drop messages already sent to us, which would then sit unacked until the
    // ack wait expires.
    f.stop = true;
    await f.done;
    if (this.fetching.get(p) === f) this.fetching.delete(p);
  }

  /**
   * Stops fetching `p` and hands back what its joiner holds: pending impressions and orphan
   * positives are naked, so the partition's next owner re-joins them from the stream. Examples
   * already buffered or in flight are finished (they ack their events).
   */
  private async letGo(p: number): Promise<PartitionState | undefined> {
    const f = this.fetching.get(p);
    // this let-go wins over an acquire that came before it
    if (f) f.restart = false;
    await this.stopFetching(p);
    const ps = this.parts.get(p);
    if (this.fetching.has(p)) return ps; // leased again and restarted meanwhile
    if (ps && !ps.closed) {
      ps.closed = true;
      for (const t of [...ps.retained.values()]) {
        t.nak = true;
        this.release(t);
      }
      ps.retained.clear();
    }
    if (f?.restart) this.startFetching(p);
    return ps;
  }

  /** Graceful handover: let go of `p`, then wait until every event of `p` we hold is acked or naked. */
  private async handOver(p: number): Promise<void> {
    const ps = await this.letGo(p);
    if (ps && ps.tracked.size > 0) await new Promise<void>((r) => ps.idle.push(r));
    this.log('info', 'partition handed over', { partition: p });
  }

  /**
   * Pulls `p` while its lease is held: one pull request at a time on one subscription (see
   * pull-feed.ts for why not `Consumer.fetch()`), each sized to the buffer room left.
   */
  private async fetchLoop(p: number, f: Fetching): Promise<void> {
    const o = this.options;
    // Room promised to the open request and not yet filled by its messages.
    let unused = 0;
    const feed = new PullFeed(
      this.nc!,
      {
        stream: this.subj.feedbackStream,
        durable: `${o.consumer.durablePrefix}-p${p}`,
        expiresMs: o.consumer.fetchExpiresMs,
        graceMs: Math.max(1000, o.consumer.fetchExpiresMs),
        ackTimeoutMs: o.requestTimeoutMs,
      },
      (m) => {
        if (unused > 0) {
          unused--;
          this.reservedRoom--;
        }
        const ps = this.parts.get(p);
        if (f.stop || !ps || ps.closed) {
          // arrived after we let go of the partition: hand it back for its next owner at once
          m.nak();
          this.counters.naked++;
          return;
        }
        this.admit(m, ps);
      },
    );
    try {
      while (!f.stop) {
        // Room is reserved across partitions' concurrent requests, so that together they never
        // bring in more than maxBufferedEvents.
        const room = o.maxBufferedEvents - this.buffer.length - this.reservedRoom;
        if (room <= 0) {
          await new Promise<void>((r) => this.bufferSpace.push(r));
          continue;
        }
        const want = Math.min(room, o.batch.size * 2);
        this.reservedRoom += want;
        unused = want;
        let r;
        try {
          r = await feed.request(want);
        } finally {
          this.reservedRoom -= unused;
          if (unused > 0) {
            unused = 0;
            // room promised to this request is free again for the other partitions
            const waiters = this.bufferSpace;
            this.bufferSpace = [];
            waiters.forEach((w) => w());
          }
        }
        // An empty long poll: nothing is waiting, so event time may follow wall time.
        const ps = this.parts.get(p);
        if (r.end === 'expired' && r.delivered === 0 && ps) ps.caughtUp = true;
        if ((r.end === 'refused' || r.end === 'silent') && r.delivered === 0 && !f.stop) {
          this.log('warn', 'pull request unanswered; retrying', {
            partition: p,
            end: r.end,
            status: r.status,
          });
          await new Promise((res) => setTimeout(res, 250));
        }
      }
    } finally {
      feed.close();
    }
  }

  // ------------------------------------------------------------------ admission and joining

  private admit(m: JsMsg, ps: PartitionState): void {
    if (ps.recovered.delete(m.seq)) {
      // a batch recovered from a manifest applied this message's example already
      m.ack();
      this.counters.acked++;
      this.counters.recoveredAcks++;
      return;
    }
    const known = ps.tracked.get(m.seq);
    if (known) {
      // JetStream redelivered a message we still hold (its ack wait ran out): keep the newer
      // delivery's handle for the ack, and do not feed the event twice.
      known.msg = m;
      this.counters.redelivered++;
      return;
    }
    ps.caughtUp = m.info.pending === 0;
    const t: Tracked = { msg: m, seq: m.seq, part: ps, refs: 1, nak: false };
    ps.tracked.set(m.seq, t);
    const r = parseEvent(m.data, this.parseOpts);
    if (!r.ok) {
      this.deadLetter(t, r.reason, r.message);
      this.release(t);
      return;
    }
    const ev = r.event;
    if (ev.kind === 'example') {
      // pre-labelled: no join; not deduped by id (JetStream's message-id dedupe covers publishers)
      const ex: Example = { features: ev.features, label: ev.label, weight: ev.weight, ts: ev.ts };
      this.enqueue({ partition: ps.partition, example: ex, deps: [t], key: String(t.seq), joined: false });
      this.release(t);
      return;
    }
    this.join(ps, t, ev);
    this.release(t);
  }

  private join(ps: PartitionState, t: Tracked, ev: FeedbackEvent): void {
    let dropped: JoinerDropReason | undefined;
    const out = ps.joiner.push(ev, (reason) => (dropped = reason));
    // a dropped duplicate has the id of the event the joiner holds: the original stays the holder
    if (dropped === undefined && !ps.retained.has(ev.id) && ps.joiner.retains(ev)) {
      t.refs++;
      ps.retained.set(ev.id, t);
    }
    this.emitJoined(ps, out, ev.id, t);
    if (dropped === 'RATE_LIMITED') {
      this.deadLetter(t, 'RATE_LIMITED', `user ${ev.user} over the positive-signal rate limit`);
    } else if (dropped !== undefined || (out.length === 0 && !ps.retained.has(ev.id))) {
      this.counters.ignored++;
    }
  }

  /** Buffers joined examples, each holding the messages it came from until it is applied. */
  private emitJoined(ps: PartitionState, out: JoinedExample[], curId?: string, cur?: Tracked): void {
    for (const ex of out) {
      const deps: Tracked[] = [];
      const freed: string[] = [];
      const ids =
        ex.impressionId !== undefined && ex.impressionId !== ex.eventId
          ? [ex.impressionId, ex.eventId]
          : [ex.eventId];
      for (const id of ids) {
        const held = ps.retained.get(id);
        // a late positive's impression was acked with its negative: only the click is held then
        const d = held ?? (id === curId ? cur : undefined);
        if (!d || deps.includes(d)) continue;
        deps.push(d);
        if (held) freed.push(id);
      }
      const e: Example = { features: ex.features, label: ex.label, weight: ex.weight, ts: ex.ts };
      const key = `${deps.map((d) => d.seq).join('+')}${ex.source.charAt(0)}${ex.label >= 0.5 ? 1 : 0}`;
      this.enqueue({ partition: ps.partition, example: e, deps, key, joined: true });
      // the example now holds those messages; the joiner no longer does
      for (const id of freed) this.unretain(ps, id);
    }
  }

  /** The joiner let go of a held event (or an example took it over): drop the joiner's hold. */
  private unretain(ps: PartitionState, id: string): void {
    const t = ps.retained.get(id);
    if (!t) return;
    ps.retained.delete(id);
    this.release(t);
  }

  private enqueue(b: Omit<Buffered, 'at'>): void {
    for (const d of b.deps) d.refs++;
    this.buffer.push({ ...b, at: Date.now() });
    const n = (this.bufferedOf.get(b.partition) ?? 0) + 1;
    this.bufferedOf.set(b.partition, n);
    const f = this.bufferFilled;
    if (f && n >= this.options.batch.size) {
      this.bufferFilled = undefined;
      f();
    }
  }

  /** Closes attribution windows on caught-up partitions by wall time (minus `joinClock.lagMs`). */
  private advanceJoiners(): void {
    if (this._state !== 'running') return;
    const now = Date.now() - this.options.joinClock.lagMs;
    for (const ps of this.parts.values()) {
      // A partition with a backlog is judged by event time only: the events it has not read
      // yet may still label its pending impressions.
      if (ps.closed || !ps.caughtUp || ps.joiner.pendingCount + ps.joiner.orphanCount === 0) continue;
      this.emitJoined(ps, ps.joiner.advance(now));
    }
  }

  /** Drops one hold on a message; the last one acks it (or naks it when it was handed back). */
  private release(t: Tracked): void {
    if (--t.refs > 0) return;
    if (t.nak) {
      t.msg.nak(this.options.consumer.nakDelayMs);
      this.counters.naked++;
    } else {
      t.msg.ack();
      this.counters.acked++;
    }
    const ps = t.part;
    ps.tracked.delete(t.seq);
    if (ps.tracked.size === 0 && ps.idle.length > 0) {
      const w = ps.idle.splice(0);
      w.forEach((r) => r());
    }
  }

  /**
   * Stores the message's payload on the dead-letter stream with its reason; the message is held
   * until the dead letter is stored, then acked. If it cannot be stored, the message is handed
   * back (redelivered) — after a few deliveries it is published without JetStream and acked, so a
   * missing dead-letter stream cannot wedge a partition.
   */
  private deadLetter(t: Tracked, reason: DeadLetterReason, message: string): void {
    t.refs++;
    const m = t.msg;
    this.dlq!.send(m.data, { reason, message }, { subject: m.subject, seq: t.seq }).then(
      () => {
        this.dlCounts[reason]++;
        this.counters.deadLettered++;
        this.release(t);
      },
      (e: unknown) => {
        this.counters.deadLetterFailures++;
        if (m.info.deliveryCount >= 5) {
          const h = natsHeaders();
          h.set('Freshet-Reason', reason);
          h.set('Freshet-Message', message.replace(/[\r\n]/g, ' ').slice(0, 256));
          try {
            this.nc?.publish(this.subj.deadLetter, m.data, { headers: h });
          } catch {
            // best effort: the event is dropped either way
          }
          this.dlCounts[reason]++;
          this.counters.deadLettered++;
        } else {
          this.log('warn', 'dead letter not stored; event handed back', { reason, error: String(e) });
          t.nak = true;
        }
        this.release(t);
      },
    );
  }

  /** Adds a let-go partition's joiner counters to the totals the status reports. */
  private absorbJoiner(ps: PartitionState): void {
    this.joinerPast = addJoinerCounters(this.joinerPast, ps.joiner.counters());
  }

  // ------------------------------------------------------------------ batching

  private async batcher(): Promise<void> {
    const o = this.options;
    for (;;) {
      const first = this.buffer[0];
      const age = first ? Date.now() - first.at : 0;
      const full = first ? this.fullPartition() : undefined;
      if (!first || (full === undefined && age < o.batch.maxWaitMs)) {
        if (!first && (this._state === 'draining' || this._state === 'stopped' || this._state === 'failed'))
          return;
        await new Promise<void>((resolve) => {
          this.bufferFilled = resolve;
          // an empty buffer is polled; a partial one waits at most maxWaitMs for more events
          setTimeout(resolve, first ? o.batch.maxWaitMs - age : Math.min(o.batch.maxWaitMs, 20));
        });
        this.bufferFilled = undefined;
        continue;
      }
      await this.slots.acquire();
      // One partition per batch: its manifest then belongs to that partition's next owner alone.
      const take = this.takeBatch(full ?? this.buffer[0]?.partition);
      const waiters = this.bufferSpace;
      this.bufferSpace = [];
      waiters.forEach((r) => r());
      if (take.length === 0) {
        this.slots.release();
        continue;
      }
      const job = this.runBatch(take).finally(() => {
        this.slots.release();
        this.inFlight.delete(job);
      });
      this.inFlight.add(job);
    }
  }

  /** A partition with a full batch buffered, if any. */
  private fullPartition(): number | undefined {
    for (const [p, n] of this.bufferedOf) if (n >= this.options.batch.size) return p;
    return undefined;
  }

  /** Takes up to `batch.size` buffered examples of `partition`, oldest first. */
  private takeBatch(partition: number | undefined): Buffered[] {
    if (partition === undefined) return [];
    const size = this.options.batch.size;
    const take: Buffered[] = [];
    const rest: Buffered[] = [];
    for (const b of this.buffer) {
      if (b.partition === partition && take.length < size) take.push(b);
      else rest.push(b);
    }
    this.buffer = rest;
    const left = (this.bufferedOf.get(partition) ?? 0) - take.length;
    if (left > 0) this.bufferedOf.set(partition, left);
    else this.bufferedOf.delete(partition);
    return take;
  }

  /**
   * Stable across redeliveries of the same events: shards dedupe a re-push of the same batch.
   * Keys name each example by the stream sequences of its messages and its label, so a joined
   * example re-derived from the same impression and click has the same key.
   */
  private pushId(items: Buffered[]): string {
    hashString64(items.map((b) => b.key).join(','), scratch);
    return `${hex(scratch[0]!)}${hex(scratch[1]!)}n${items.length}`;
  }

  /**
   * Trains one batch and pushes it until every shard accepted it; then acks its events. Resolves
   * true once settled, false when it was handed back (the worker is stopping).
   */
  private async runBatch(items: Buffered[], rec?: Recovered): Promise<boolean> {
    const o = this.options;
    const msgs = [...new Set(items.flatMap((b) => b.deps))];
    const model = this.model!;
    const client = this.client!;
    const pool = this.pool!;
    const examples = items.map((b) => b.example);
    const onRetry = () => {
      this.counters.retries++;
      // keep the events ours while we retry (resets their ack-wait timer)
      for (const t of msgs) t.msg.working();
    };
    let eventTs: number | undefined = rec?.eventTs;
    if (!rec) {
      let min = Number.POSITIVE_INFINITY;
      for (const b of items) min = Math.min(min, labelKnownAt(b));
      eventTs = Number.isFinite(min) ? min : undefined;
    }
    const id = rec?.id ?? this.pushId(items);
    const manifest: ManifestHandle | undefined = rec
      ? { key: rec.key, partition: items[0]?.partition ?? -1, revision: rec.revision }
      : this.writeManifest(items, id, eventTs);
    let pending: Set<number> | undefined;
    // a recovered batch was scored by the owner that formed it
    let scored = rec !== undefined;
    const t0 = performance.now();
    const ms = { encode: 0, pull: 0, compute: 0, push: 0 };
    let t = t0;
    const lap = (stage: keyof typeof ms) => {
      const now = performance.now();
      ms[stage] += now - t;
      t = now;
    };
    for (let attempt = 0; ; attempt++) {
      try {
        for (let round = 0; ; round++) {
          t = performance.now();
          const batch = model.encode(examples);
          const labels = batch.labels.slice();
          const weights = batch.weights.slice();
          const plan = client.route(batch);
          pending ??= new Set(plan.parts.map((x) => x.shard));
          lap('encode');
          const pulled = await client.pull(plan, { clock: this.clock, onRetry });
          lap('pull');
          let r: Awaited<ReturnType<ComputePool['gradients']>>;
          for (let busy = 0; ; busy++) {
            try {
              r = await pool.gradients(batch, pulled.rows, pulled.shared);
              break;
            } catch (e) {
              if (!hasCode(e, 'OVERLOADED') || busy > 20) throw e;
              await new Promise((res) => setTimeout(res, 10 * (busy + 1)));
            }
          }
          lap('compute');
          if (!scored) {
            scored = true;
            const loss = this.metrics.add(r.preds, labels, weights);
            this.lr.observe(loss, labels.length);
          }
          if (!allFinite(r.grads)) {
            this.counters.nonFiniteBatches++;
            for (const m of msgs) this.deadLetter(m, 'NON_FINITE', 'non-finite gradient: update not applied');
            this.settleBatch(items, false);
            this.dropManifest(manifest);
            return true;
          }
          if (manifest && manifest.revision === undefined) {
            // The manifest must be stored before any shard can accept the batch.
            const w0 = performance.now();
            if (!manifest.put) this.storeManifest(manifest);
            await manifest.put;
            this.timing.add('manifestWait', performance.now() - w0);
            t = performance.now();
          }
          const out = await client.push(plan, pulled, r.grads, {
            id,
            clock: this.clock,
            eventTs,
            lrScale: this.lr.scale(),
            only: pending,
            onRetry,
          });
          lap('push');
          this.counters.pushes += out.accepted.size;
          this.counters.pushDuplicates += out.duplicates;
          this.counters.maxStaleness = Math.max(this.counters.maxStaleness, out.maxStaleness);
          for (const s of out.accepted) pending.delete(s);
          if (pending.size === 0) break;
          this.counters.staleRounds++;
          if (round >= o.retry.staleRounds) {
            throw new FreshetError(
              'STALE',
              `shards ${[...pending].join(',')} rejected ${round + 1} rounds as stale`,
            );
          }
        }
        this.clock++;
        this.rate.push({ t: Date.now(), n: items.length });
        this.settleBatch(items, false);
        // after the acks: a crash in between leaves a manifest whose batch every shard has (a
        // recovery re-push is all duplicates)
        this.dropManifest(manifest);
        this.timing.add('encode', ms.encode);
        this.timing.add('pull', ms.pull);
        this.timing.add('compute', ms.compute);
        this.timing.add('push', ms.push);
        this.timing.add('total', performance.now() - t0);
        return true;
      } catch (e) {
        this.counters.failedBatches++;
        const running =
          (this._state === 'running' || this._state === 'starting') && !this.abort.signal.aborted;
        this.log('warn', running ? 'batch failed; retrying it whole' : 'batch handed back', {
          error: String(e),
          code: e instanceof FreshetError ? e.code : 'INTERNAL',
          events: msgs.length,
          attempt,
          pendingShards: pending ? [...pending] : [],
        });
        if (!running) {
          // Not applied everywhere and we are stopping: never ack; hand the events back. The
          // manifest stays: the partition's next owner re-pushes exactly this batch first.
          this.settleBatch(items, true);
          this.freeSlot(manifest);
          return false;
        }

        // The same batch again (same id, same shards still pending): the shards that accepted
        // it answer `duplicate`, so nothing is applied twice. Re-forming it from redelivered
        // events could not promise that, and joined examples cannot be re-derived by this worker.
        onRetry();
        await new Promise((res) =>
          setTimeout(res, Math.min(o.retry.maxMs, o.consumer.nakDelayMs * (attempt + 1))),
        );
      }
    }
  }

  // ------------------------------------------------------------------ batch manifests

  /** Starts storing a batch's manifest in a free slot of its partition (undefined when disabled). */
  private writeManifest(
    items: Buffered[],
    id: string,
    eventTs: number | undefined,
  ): ManifestHandle | undefined {
    const first = items[0];
    if (!this.options.manifest.enabled || !this.kv || !first) return undefined;
    const partition = first.partition;
    let used = this.manifestSlots.get(partition);
    if (!used) this.manifestSlots.set(partition, (used = new Set()));
    let slot = 0;
    while (used.has(slot) || this.recovering.has(manifestKey(partition, slot))) slot++;
    used.add(slot);
    const ex: ManifestExample[] = items.map((b) => {
      const s = b.deps.map((d) => d.seq);
      if (!b.joined) return { s };
      const e: ManifestExample = { s, l: b.example.label, f: b.example.features as Features };
      if (b.example.weight !== undefined) e.w = b.example.weight;
      if (b.example.ts !== undefined) e.t = b.example.ts;
      return e;
    });
    const m: BatchManifest = { v: 1, id, partition, worker: this.id, ex };
    if (eventTs !== undefined) m.eventTs = eventTs;
    const h: ManifestHandle = {
      key: manifestKey(partition, slot),
      partition,
      slot,
      bytes: encodeManifest(m),
    };
    this.storeManifest(h);
    return h;
  }

  /** One KV put, in flight while the batch is encoded, pulled and computed. */
  private storeManifest(h: ManifestHandle): void {
    const t0 = performance.now();
    const put = this.kv!.put(h.key, h.bytes!).then(
      (rev) => {
        this.counters.manifestPuts++;
        this.timing.add('manifest', performance.now() - t0);
        h.revision = rev;
        return rev;
      },
      (e: unknown) => {
        this.counters.manifestFailures++;
        h.put = undefined; // the batch's retry stores it again
        throw new FreshetError('UNAVAILABLE', `batch manifest not stored: ${String(e)}`, { cause: e });
      },
    );
    // awaited before the first push; a batch that fails earlier must not leave it unhandled
    put.catch(() => undefined);
    h.put = put;
  }

  private freeSlot(h: ManifestHandle | undefined): void {
    if (h?.slot !== undefined) this.manifestSlots.get(h.partition)?.delete(h.slot);
  }

  /**
   * Deletes a settled batch's manifest, only if it is still the value this batch stored (CAS on
   * its revision): the slot may already hold a newer batch's manifest.
   */
  private dropManifest(h: ManifestHandle | undefined): void {
    if (!h) return;
    this.freeSlot(h);
    const kv = this.kv!;
    const del = (rev: number) =>
      kv.delete(h.key, { previousSeq: rev }).catch((e: unknown) => {
        this.log('info', 'manifest not deleted (replaced or gone)', { key: h.key, error: String(e) });
      });
    if (h.revision !== undefined) void del(h.revision);
    else if (h.put) void h.put.then(del, () => undefined);
  }

  /**
   * Before fetching a newly leased partition: re-forms every batch a previous owner left a
   * manifest for and pushes it under its original id (shards that applied it answer
   * `duplicate`), then remembers its stream sequences so their redeliveries are acked, not
   * trained again. Fetching starts only after this, so no redelivered event of such a batch can
   * enter a different batch.
   */
  private async recoverManifests(p: number, f: { stop: boolean }): Promise<void> {
    if (!this.options.manifest.enabled || !this.kv) return;
    const kv = this.kv;
    const keys = await this.untilDone(f, 'list manifests', async () => {
      const out: string[] = [];
      for await (const k of await kv.keys(manifestFilter(p))) out.push(k);
      return out.sort();
    });
    if (!keys || keys.length === 0) return;
    keys.forEach((k) => this.recovering.add(k));
    try {
      for (const key of keys) {
        if (f.stop) return;
        const entry = await this.untilDone(f, 'read manifest', () => kv.get(key));
        if (!entry) return;
        if (entry.operation !== 'PUT' || entry.length === 0) continue;
        let m: BatchManifest;
        try {
          m = decodeManifest(entry.value);
        } catch (e) {
          this.log('error', 'malformed batch manifest dropped', { key, error: String(e) });
          await kv.delete(key, { previousSeq: entry.revision }).catch(() => undefined);
          continue;
        }
        const items = await this.reform(p, m, f);
        if (!items) return;
        this.log('info', 'recovering batch from manifest', {
          partition: p,
          id: m.id,
          from: m.worker,
          examples: items.length,
        });
        const rec: Recovered = { id: m.id, key, revision: entry.revision, eventTs: m.eventTs };
        if (items.length === 0 || !(await this.runBatch(items, rec))) {
          if (items.length === 0) this.dropManifest({ key, partition: p, revision: entry.revision });
          if (items.length > 0) return;
          continue;
        }
        this.counters.recoveredBatches++;
        this.counters.recoveredExamples += items.length;
        const ps = this.parts.get(p);
        for (const ex of m.ex) for (const seq of ex.s) ps?.recovered.add(seq);
      }
    } finally {
      keys.forEach((k) => this.recovering.delete(k));
    }
  }

  /** The manifest's examples, rebuilt (pre-labelled ones read back from the stream by sequence). */
  private async reform(p: number, m: BatchManifest, f: { stop: boolean }): Promise<Buffered[] | undefined> {
    const out: Buffered[] = [];
    const now = Date.now();
    for (const ex of m.ex) {
      let example: Example | undefined;
      if (ex.f) {
        example = { features: ex.f, label: ex.l ?? 0 };
        if (ex.w !== undefined) example.weight = ex.w;
        if (ex.t !== undefined) example.ts = ex.t;
      } else if (ex.s[0] !== undefined) {
        const seq = ex.s[0];
        const got = await this.untilDone(f, 'read event', async () => {
          try {
            return await this.jsm!.streams.getMessage(this.subj.feedbackStream, { seq });
          } catch (e) {
            // gone from the stream (limits): nothing to rebuild it from
            if (/no message found|not found/i.test(String(e))) return null;
            throw e;
          }
        });
        if (got === undefined) return undefined;
        const r = got ? parseEvent(got.data, recoveryParse) : undefined;
        if (r?.ok && r.event.kind === 'example') {
          const ev = r.event;
          example = { features: ev.features, label: ev.label, weight: ev.weight, ts: ev.ts };
        }
      }
      if (!example) {
        this.counters.manifestsUnrecoverable++;
        this.log('error', 'manifest example cannot be rebuilt; left out', {
          partition: p,
          id: m.id,
          seqs: ex.s,
        });
        continue;
      }
      out.push({ partition: p, example, deps: [], key: '', joined: ex.f !== undefined, at: now });
    }
    return out;
  }

  /** Retries a KV/stream read until it succeeds or the partition is let go (then undefined). */
  private async untilDone<T>(
    f: { stop: boolean },
    what: string,
    fn: () => Promise<T>,
  ): Promise<T | undefined> {
    for (let attempt = 0; ; attempt++) {
      if (f.stop || this.abort.signal.aborted) return undefined;
      try {
        return await fn();
      } catch (e) {
        this.log('warn', `${what} failed; retrying`, { error: String(e), attempt });
        await new Promise((r) => setTimeout(r, Math.min(2000, 100 * 2 ** Math.min(attempt, 5))));
      }
    }
  }

  /** Releases a batch's holds on its messages; `handBack` naks them instead of acking. */
  private settleBatch(items: Buffered[], handBack: boolean): void {
    for (const b of items) {
      for (const d of b.deps) {
        if (handBack) d.nak = true;
        this.release(d);
      }
    }
  }

  // ------------------------------------------------------------------ status

  /** The status the service API reports (without lag, which needs a server round trip). */
  status(): WorkerStatus {
    const now = Date.now();
    while (this.rate.length > 0 && now - this.rate[0]!.t > 10_000) this.rate.shift();
    const n = this.rate.reduce((a, b) => a + b.n, 0);
    const span = this.rate.length > 0 ? Math.max(1000, now - this.rate[0]!.t) : 10_000;
    return {
      id: this.id,
      cluster: this.options.cluster,
      state: this._state,
      partitions: this.partitions,
      members: this.leases?.members ?? [],
      backend: this.pool?.backend ?? 'unknown',
      examples: this.metrics.examples,
      examplesPerS: Math.round((n * 1000) / span),
      batches: this.clock,
      inFlightBatches: this.inFlight.size,
      bufferedEvents: this.buffer.length,
      progressive: this.metrics.snapshot(),
      lrScale: this.lr.scale(),
      lrLowered: this.lr.lowered,
      counters: { ...this.counters },
      timing: this.timing.snapshot(),
      joiner: this.joinerStatus(),
      deadLetters: { ...this.dlCounts },
      progressiveHistogram: this.metrics.mergeable(),
    };
  }

  private joinerStatus(): JoinerStatus {
    let c = this.joinerPast;
    let pending = 0;
    let orphans = 0;
    let retainedMessages = 0;
    for (const ps of this.parts.values()) {
      c = addJoinerCounters(c, ps.joiner.counters());
      if (ps.closed) continue;
      pending += ps.joiner.pendingCount;
      orphans += ps.joiner.orphanCount;
      retainedMessages += ps.retained.size;
    }
    c ??= new Joiner().counters();
    return { ...c, pending, orphans, retainedMessages };
  }

  private async statusWithLag(): Promise<WorkerStatus> {
    const s = this.status();
    const lag: Record<string, number> = {};
    await Promise.all(
      s.partitions.map(async (p) => {
        try {
          // fresh, not the cached info of start(): lag must move
          const info = await this.consumers.get(p)?.info();
          if (info) lag[String(p)] = info.num_pending;
        } catch {
          // lag is best effort
        }
      }),
    );
    return { ...s, lag };
  }

  // ------------------------------------------------------------------ shutdown

  /**
   * Stops taking work, hands back events not yet batched (nak), finishes in-flight batches
   * (within `drainMs`; then aborts their retries, which hands them back too), gives up the
   * leases so other workers take the partitions at once, and closes.
   */
  stop(drainMs = 10_000): Promise<void> {
    this.stopping ??= this.doStop(drainMs);
    return this.stopping;
  }

  private async doStop(drainMs: number): Promise<void> {
    if (this._state === 'idle') {
      this._state = 'stopped';
      return;
    }
    this._state = 'draining';
    clearInterval(this.joinTimer);
    // Let go of every partition: the joiners' held events are handed back, for the next owner
    // to re-join; examples not yet batched are handed back too (their events redelivered).
    this.bufferSpace.forEach((r) => r());
    // started before letting go: a partition's manifest recovery may be retrying a push
    const timer = setTimeout(() => this.abort.abort(), drainMs);
    await Promise.all([...this.parts.keys()].map((p) => this.letGo(p)));
    this.settleBatch(this.buffer.splice(0), true);
    this.bufferedOf.clear();
    this.bufferSpace.forEach((r) => r());
    await Promise.allSettled([...this.inFlight]);
    clearTimeout(timer);
    this.bufferFilled?.();
    await this.batcherDone;
    await this.teardown();
    this._state = 'stopped';
    this.log('info', 'worker stopped');
  }

  private async teardown(): Promise<void> {
    clearInterval(this.joinTimer);
    await this.leases?.stop().catch(() => undefined);
    await this.service?.stop().catch(() => undefined);
    await this.pool?.close().catch(() => undefined);
    if (this.ownNc) await this.nc?.drain().catch(() => undefined);
  }
}

function addJoinerCounters(a: JoinerCounters | undefined, b: JoinerCounters): JoinerCounters {
  if (!a) return { ...b, dropped: { ...b.dropped } };
  const out = { ...a, dropped: { ...a.dropped } };
  for (const k of Object.keys(b) as (keyof JoinerCounters)[]) {
    if (k === 'dropped') continue;
    out[k] = a[k] + b[k];
  }
  for (const r of Object.keys(b.dropped) as JoinerDropReason[]) out.dropped[r] = a.dropped[r] + b.dropped[r];
  return out;
}

/** Creates and starts a worker (what the CLI's `freshet worker` calls). */
export async function startWorker(options: WorkerOptionsInput, deps: WorkerDeps = {}): Promise<Worker> {
  const w = new Worker(options, deps);
  await w.start();
  return w;
}
