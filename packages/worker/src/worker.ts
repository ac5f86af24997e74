import { randomBytes } from 'node:crypto';
import {
  AckPolicy,
  DeliverPolicy,
  nanos,
  type Consumer,
  type JetStreamClient,
  type JetStreamManager,
  type KV,
  type NatsConnection,
  type Service,
} from 'nats';
import {
  connectNats,
  DeadLetters,
  EventDictionaries,
  kvKeys,
  Lifecycle,
  type ActorState,
  type ProcessActor,
} from '@freshet/nats';
import { createModel, type Model } from '@freshet/model';
import {
  compileParseOptions,
  deadLetterReasons,
  FreshetError,
  subjects,
  type DeadLetterReason,
  type Subjects,
} from '@freshet/protocol';
import { BatchTiming, type BatchTimingSnapshot } from './batch-timing.js';
import { AppliedSeqs } from './applied-seqs.js';
import { ComputePool } from './compute-pool.js';
import { ConfirmedAcks } from './confirmed-acks.js';
import { EncoderStatsPublisher } from './encoder-stats-publisher.js';
import { Joiner, type JoinerCounters, type JoinerDropReason } from './joiner.js';
import { LrSchedule } from './lr-schedule.js';
import { ManifestRecovery } from './manifest-recovery.js';
import { ManifestStore } from './manifest-store.js';
import { MessageHolds } from './message-holds.js';
import { ModelGuard, type GuardTrip, type ModelGuardStatus } from './model-guard.js';
import { ForgottenUsers } from './forgotten-users.js';
import { Joining } from './joining.js';
import { BatchRunner } from './batch-runner.js';
import { DenseReplica, type DenseReplicaCounters } from './dense-replica.js';
import { ensurePartitionConsumer } from './partition-consumer.js';
import { PartitionLeases, type LeaseCounters } from './partition-leases.js';
import { PullFeed } from './pull-feed.js';
import { ServedCtr, type ServedCounts } from './served-ctr.js';
import { ConsumerLag } from './consumer-lag.js';
import { ProgressiveMetrics, type ProgressiveHistogram, type ProgressiveSnapshot } from './progressive.js';
import { adaptiveLingerMs, HostRouter } from './host-router.js';
import { ShardClient } from './shard-client.js';
import { compileWorkerOptions, type WorkerOptions, type WorkerOptionsInput } from './worker-options.js';
import type { Buffered, PartitionState, WorkerCounters, WorkerLog } from './worker-types.js';

/** Actor states: the actor contract's (docs/architecture.md). */
export type WorkerState = ActorState;

/** What the NATS service API reports for a worker. */
export interface WorkerStatus {
  id: string;
  cluster: string;
  state: WorkerState;
  partitions: number[];
  members: string[];
  /** Partitions this worker took up, handed over and lost (by reason), cumulative. */
  leases: LeaseCounters;
  backend: string;
  examples: number;
  /** Over the last 10 s. */
  examplesPerS: number;
  batches: number;
  inFlightBatches: number;
  bufferedEvents: number;
  /** Acks of applied events waiting for the consumer leader's confirmation (grows while it is away). */
  acksConfirming: number;
  progressive: ProgressiveSnapshot;
  lrScale: number;
  lrLowered: number;
  /** Times the drift detector saw the progressive loss jump (and raised the rate). */
  lrDrifts: number;
  /** The model guard (docs/model-versions.md). */
  guard: ModelGuardStatus;
  /** Events not yet delivered to this worker, per owned partition (consumer num_pending). */
  lag?: Record<string, number>;
  counters: WorkerCounters;
  /** Per-batch time breakdown (p50/p90 over the last 256 batches, and an EWMA). */
  timing: BatchTimingSnapshot;
  /** Joiner counters summed over every partition this worker has joined, plus current state sizes. */
  joiner: JoinerStatus;
  /** Dead letters stored by this worker, by reason (all reasons present). */
  deadLetters: Record<DeadLetterReason, number>;
  /** Numeric feature values clipped to their field's range by this worker's encoder, by field. */
  clippedValues: Record<string, number>;
  /** Cumulative progressive metrics in a mergeable form: merge workers with `mergeProgressive`. */
  progressiveHistogram: ProgressiveHistogram;
  /** The last `metrics.window` examples (`progressive.window` of them so far), mergeable alike. */
  progressiveWindowHistogram: ProgressiveHistogram;
  /** The dense replica's flushes (`dense.mode: replica`); absent otherwise. */
  dense?: DenseReplicaCounters | undefined;
  /** Users deleted with `freshet user forget` (known to this worker) and their events dropped. */
  forgotten: { users: number; droppedEvents: number };
  /** The cluster whose feedback stream this worker learns from (its own, or the live model's). */
  feedbackCluster: string;
  /** Impressions with `meta.servedBy` and their positives, by serving model (docs/multi-model.md). */
  served: Record<string, ServedCounts>;
  /** Host messages sent to shard hosts and the requests they carried (`hostRouting`); absent when off. */
  hostRouting?: HostRouter['stats'] | undefined;
}

/** The joiner part of a worker's status. */
export interface JoinerStatus extends JoinerCounters {
  /** Pending impressions and orphan positives held now, over owned partitions. */
  pending: number;
  orphans: number;
  /** Messages held unacked because the joiner holds their events. */
  retainedMessages: number;
}

/** Things a caller may hand a worker instead of letting it create them (tests, the CLI). */
export interface WorkerDeps {
  /** An open connection to use (not closed by stop()); otherwise one is opened from options.nats. */
  nc?: NatsConnection;
  signal?: AbortSignal;
  /** Structured log lines (the CLI prints them); silent by default. */
  log?: WorkerLog;
}

/** A partition's fetch loop. */
interface Fetching {
  stop: boolean;
  /** Leased again while this loop was being stopped: start a new one once it is let go. */
  restart: boolean;
  done: Promise<void>;
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

/**
 * The gradient worker actor: leases feedback partitions, batches their events, pulls rows from
 * the shards, computes gradients in a piscina pool, pushes them and acks the events only after
 * every shard accepted its part. See the package README for the guarantees.
 */
export class Worker implements ProcessActor {
  readonly role = 'worker';
  readonly options: WorkerOptions;
  private readonly subj: Subjects;
  /** The feedback stream's subjects: this cluster's, or the cluster named by `feedback.cluster`. */
  private readonly feed: Subjects;
  private readonly served = new ServedCtr();
  private readonly deps: WorkerDeps;
  private readonly life: Lifecycle;
  private nc: NatsConnection | undefined;
  private ownNc = false;
  private js: JetStreamClient | undefined;
  private kv: KV | undefined;
  /** The bucket read from its stream leader, for manifest recovery's decisions. */
  private kvLeader: KV | undefined;
  /** This process's incarnation: a restarted worker with the same id is another writer. */
  private readonly tag: string;
  private jsm: JetStreamManager | undefined;
  private model: Model | undefined;
  private pool: ComputePool | undefined;
  private client: ShardClient | undefined;
  private router: HostRouter | undefined;
  private dense: DenseReplica | undefined;
  private leases: PartitionLeases | undefined;
  private service: Service | undefined;
  private readonly consumers = new Map<number, Consumer>();
  private readonly lag = new ConsumerLag();
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
  private refreshTimer: ReturnType<typeof setInterval> | undefined;
  private readonly timing = new BatchTiming();
  private buffer: Buffered[] = [];
  /** Buffered examples per partition (a partition with a full batch is batched alone). */
  private readonly bufferedOf = new Map<number, number>();
  /** Buffer room promised to fetches still open (messages not yet arrived). */
  private reservedRoom = 0;
  private bufferSpace: (() => void)[] = [];
  private bufferFilled: (() => void) | undefined;
  private readonly inFlight = new Set<Promise<unknown>>();
  /** Batches before their push is sent (`maxInFlightBatches`). */
  private readonly slots: Semaphore;
  /** All batches in flight: as many again while pushes are answered (`overlapPush`). */
  private readonly jobs: Semaphore;
  private batcherDone: Promise<void> | undefined;
  private readonly abort = new AbortController();
  /** The drain budget of the first stop() call. */
  private drainMs: number | undefined;
  private readonly metrics: ProgressiveMetrics;
  private readonly lr: LrSchedule;
  private readonly guard: ModelGuard;
  private readonly parseOpts;
  private readonly dictionaries: EventDictionaries;
  private readonly acks: ConfirmedAcks;
  private encoderStats: EncoderStatsPublisher | undefined;
  private readonly holds: MessageHolds;
  private readonly joining: Joining;
  private readonly forgotten = new ForgottenUsers();
  private readonly manifests: ManifestStore;
  private readonly recovery: ManifestRecovery;
  private readonly runner: BatchRunner;
  readonly counters: WorkerCounters = {
    acked: 0,
    naked: 0,
    dictionaryWaits: 0,
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
    appliedRedeliveries: 0,
    heldRefreshes: 0,
    ackRetries: 0,
    acksUnconfirmed: 0,
    manifestsUnrecoverable: 0,
    crossPartitionBatches: 0,
  };

  constructor(options: WorkerOptionsInput | WorkerOptions, deps: WorkerDeps = {}) {
    this.options = compileWorkerOptions(options as WorkerOptionsInput);
    this.tag = `${this.options.id}.${randomBytes(4).toString('hex')}`;
    this.subj = subjects(this.options.cluster);
    this.feed = subjects(this.options.feedback.cluster ?? this.options.cluster);
    this.deps = deps;
    this.slots = new Semaphore(this.options.maxInFlightBatches);
    this.jobs = new Semaphore(this.options.maxInFlightBatches * (this.options.overlapPush ? 2 : 1));
    this.metrics = new ProgressiveMetrics({ window: this.options.metrics.window });
    this.lr = new LrSchedule(this.options.lr);
    this.guard = new ModelGuard(this.options.guard, (t) => void this.pinModel(t));
    const v = this.options.validation;
    // compressed events' dictionaries live with the feedback stream's cluster
    this.dictionaries = new EventDictionaries(() => this.nc, this.feed.cluster);
    this.parseOpts = compileParseOptions({
      maxSkewMs: v.maxSkewMs,
      maxAgeMs: v.maxAgeMs ?? Infinity,
      dictionaries: this.dictionaries,
    });
    const log: WorkerLog = (level, msg, fields) => this.log(level, msg, fields);
    this.life = new Lifecycle(
      { start: (signal) => this.doStart(signal), stop: (from) => this.doStop(from) },
      { name: this.id, log, signal: deps.signal },
    );
    const ackWaitMs = this.options.consumer.ackWaitMs;
    this.acks = new ConfirmedAcks({
      nc: () => this.nc,
      timeoutMs: this.options.requestTimeoutMs,
      giveUpMs: ackWaitMs,
      signal: this.abort.signal,
      counters: this.counters,
      log,
    });
    this.holds = new MessageHolds({
      nakDelayMs: this.options.consumer.nakDelayMs,
      acks: this.acks,
      confirmAcks: this.options.consumer.confirmAcks,
      counters: this.counters,
      dlCounts: this.dlCounts,
      deadLetterSubject: this.subj.deadLetter,
      dlq: () => this.dlq,
      nc: () => this.nc,
      log,
    });
    this.joining = new Joining({
      holds: this.holds,
      counters: this.counters,
      parseOpts: this.parseOpts,
      isLabels: this.feed.isLabels,
      enqueue: (b) => this.enqueue(b),
      dictionaries: this.dictionaries,
      nakDelayMs: this.options.consumer.nakDelayMs,
      forgotten: this.forgotten,
      served: this.served,
    });
    this.manifests = new ManifestStore({
      enabled: this.options.manifest.enabled,
      worker: this.id,
      tag: this.tag,
      kv: () => this.kv,
      counters: this.counters,
      timing: this.timing,
      log,
    });
    this.runner = new BatchRunner({
      options: this.options,
      counters: this.counters,
      timing: this.timing,
      metrics: this.metrics,
      lr: this.lr,
      guard: this.guard,
      holds: this.holds,
      manifests: this.manifests,
      model: () => this.model,
      client: () => this.client,
      pool: () => this.pool,
      dense: () => this.dense,
      running: () =>
        (this.life.state === 'running' || this.life.state === 'starting') && !this.abort.signal.aborted,
      log,
    });
    this.recovery = new ManifestRecovery({
      enabled: this.options.manifest.enabled,
      kv: () => this.kv,
      kvLeader: () => this.kvLeader,
      tag: this.tag,
      keys: (filter) => kvKeys(this.jsm!, this.subj.kvBucket, filter),
      jsm: () => this.jsm,
      feedbackStream: this.feed.feedbackStream,
      store: this.manifests,
      parts: this.parts,
      counters: this.counters,
      signal: this.abort.signal,
      log,
      runBatch: (items, rec) => this.runner.run(items, rec),
      holdMs: recoveredSpanMs(this.options),
      dictionaries: this.dictionaries,
      isAlive: (worker) => worker === this.id || (this.leases?.members.includes(worker) ?? false),
      // a live writer's put lands, or fails and is stored again by the batch's retry, within this
      settleMs: 2 * this.options.requestTimeoutMs + this.options.retry.maxMs,
    });
  }

  get state(): WorkerState {
    return this.life.state;
  }
  get id(): string {
    return this.options.id;
  }
  get cluster(): string {
    return this.options.cluster;
  }
  /** The ready line's worker fields: the partitions it leased on start. */
  readyFields(): Record<string, unknown> {
    return { partitions: this.partitions };
  }
  /**
   * The model's bounded id space (feature spec `hashBuckets`), when it has one: its rows are
   * shared by many values, so a user's rows cannot be told apart and removed (`user forget`).
   */
  get hashBuckets(): number | undefined {
    return this.model?.config.features.hashBuckets;
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
  /** The linger per window that keeps shard hosts under `hostMsgsPerS` (none: fixed `lingerMs`). */
  private adaptiveLinger(h: {
    hostMsgsPerS?: number | undefined;
    lingerMs: number;
  }): (() => number) | undefined {
    const budget = h.hostMsgsPerS;
    if (budget === undefined) return undefined;
    return () => adaptiveLingerMs(this.leases?.members.length ?? 1, budget, h.lingerMs);
  }

  start(): Promise<void> {
    return this.life.start();
  }

  private async doStart(signal: AbortSignal): Promise<void> {
    const o = this.options;
    try {
      this.model = createModel(o.model as never);
      this.nc =
        this.deps.nc ??
        (await connectNats(o.nats, `freshet-worker-${o.id}`, {
          inboxPrefix: this.subj.inboxPrefix('worker'),
        }));
      this.ownNc = !this.deps.nc;
      const jsm = await this.nc.jetstreamManager();
      this.jsm = jsm;
      this.js = this.nc.jetstream();
      const replicas = await this.waitForStream(jsm, signal);
      for (let p = 0; p < o.partitions; p++) {
        const durable = `${o.consumer.durablePrefix}-p${p}`;
        const cfg = {
          durable_name: durable,
          // feedback and labels of partition p (`freshet.<c>.*.<p>`)
          filter_subject: this.feed.partitionFilter(p),
          ack_policy: AckPolicy.Explicit,
          deliver_policy: DeliverPolicy.All,
          ack_wait: nanos(o.consumer.ackWaitMs),
          max_ack_pending: o.consumer.maxAckPending,
        };
        await ensurePartitionConsumer(
          jsm,
          this.feed.feedbackStream,
          cfg,
          this.feed.feedback(p),
          this.feed.labels(p),
          (level, msg, fields) => this.log(level, msg, fields),
        );
        this.consumers.set(p, await this.js.consumers.get(this.feed.feedbackStream, durable));
      }
      // ensureStream made the bucket with the cluster's replicas; should it be missing (a stream
      // made by other tools) it is made like the feedback stream, never silently R1
      this.kv = await this.js.views.kv(this.subj.kvBucket, { history: 1, replicas });
      this.kvLeader = await this.js.views.kv(this.subj.kvBucket, { bindOnly: true, allow_direct: false });
      // before any partition is fetched: a replay of a forgotten user's events stays dropped
      await this.forgotten.load((filter) => kvKeys(jsm, this.subj.kvBucket, filter));
      this.encoderStats = new EncoderStatsPublisher(
        this.kv,
        o.id,
        this.model.encoder,
        o.encoderStatsMs,
        (level, msg, fields) => this.log(level, msg, fields),
      );
      this.encoderStats.start();
      this.dlq = new DeadLetters(this.nc, { cluster: o.cluster });
      this.pool = await ComputePool.create({
        model: this.model.config,
        threads: o.compute.threads,
        maxQueue: o.compute.maxQueue,
      });
      if (o.hostRouting.enabled) {
        this.router = new HostRouter(this.nc, {
          cluster: o.cluster,
          timeoutMs: o.requestTimeoutMs,
          maxMessageBytes: o.hostRouting.maxMessageBytes,
          cooldownMs: o.hostRouting.cooldownMs,
          lingerMs: o.hostRouting.lingerMs,
          linger: this.adaptiveLinger(o.hostRouting),
          signal: this.abort.signal,
          log: (level, msg, fields) => this.log(level, msg, fields),
        });
        await this.router.start(this.kv);
      }
      this.client = new ShardClient(this.nc, {
        cluster: o.cluster,
        shards: o.shards,
        spec: this.model.spec,
        worker: o.id,
        timeoutMs: o.requestTimeoutMs,
        retry: o.retry,
        denseCacheMaxLag: o.denseCacheMaxLag,
        halfPull: o.halfPull,
        int8Pull: o.int8Pull,
        halfPush: o.halfPush,
        int8Push: o.int8Push,
        pullSessions: o.pullSessions,
        router: this.router,
        signal: this.abort.signal,
      });
      if (o.dense.mode === 'replica' && this.model.spec.tables.some((t) => t.kind === 'dense'))
        this.dense = new DenseReplica(this.client, this.model.spec, o.dense, (level, msg, fields) =>
          this.log(level, msg, fields),
        );
      this.batcherDone = this.batcher();
      this.leases = new PartitionLeases(
        {
          kv: this.kv,
          jsm,
          bucket: this.subj.kvBucket,
          worker: o.id,
          partitions: o.partitions,
          heartbeatMs: o.lease.heartbeatMs,
          ttlMs: o.lease.ttlMs,
          log: (level, msg, fields) => this.log(level, msg, fields),
        },
        {
          acquired: (p) => this.startFetching(p),
          release: (p) => this.handOver(p),
          lost: (p) => void this.letGo(p),
        },
      );
      this.joinTimer = setInterval(() => this.advanceJoiners(), o.joinClock.everyMs);
      this.refreshTimer = setInterval(() => this.refreshHeld(), o.consumer.ackWaitMs / 3);
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
      this.log('info', 'worker started', { partitions: this.partitions, backend: this.pool.backend });
    } catch (e) {
      await this.teardown();
      throw e;
    }
  }

  /**
   * The feedback stream's replicas, once `freshet init` (or `freshet up`) has made it. Waits for
   * as long as it takes, saying so every 10 s: a worker started before init must wait, not
   * crash-loop. The signal or stop() ends the wait.
   */
  private async waitForStream(
    jsm: Awaited<ReturnType<NatsConnection['jetstreamManager']>>,
    signal: AbortSignal,
  ) {
    const t0 = Date.now();
    let lastLog = -Infinity;
    for (;;) {
      try {
        return (await jsm.streams.info(this.feed.feedbackStream)).config.num_replicas;
      } catch (e) {
        if (signal.aborted) {
          throw new FreshetError('SHUTTING_DOWN', `stopped while waiting for ${this.feed.feedbackStream}`, {
            cause: e,
          });
        }
        if (Date.now() - lastLog >= 10_000) {
          lastLog = Date.now();
          this.log('warn', 'waiting for the feedback stream: run `freshet init --config FILE`', {
            stream: this.feed.feedbackStream,
            waitedS: Math.round((Date.now() - t0) / 1000),
            error: (e as Error).message,
          });
        }
        await new Promise((r) => setTimeout(r, 500));
      }
    }
  }

  // ------------------------------------------------------------------ fetching

  private startFetching(p: number): void {
    if (this.life.state === 'draining' || this.life.state === 'stopped') return;
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
    entry.done = this.recovery
      .recover(p, entry)
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
      confirming: 0,
      // Shared with the previous incarnation: its acks may still be confirming. A confirmed ack
      // can still be lost (nats-server answers before its RAFT commit; a leader that dies then
      // loses it): the redelivery comes within an ack wait of the delivery, so confirmed
      // sequences are remembered an ack wait + 10 s; one never confirmed, a few ack waits.
      applied:
        old?.applied ??
        new AppliedSeqs(this.options.consumer.ackWaitMs + 10_000, recoveredSpanMs(this.options)),
    };
    ps.joiner = new Joiner(this.options.joiner, { released: (id) => this.joining.unretain(ps, id) });
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
   * Stops fetching `p` and hands back what its joiner holds and what is buffered: pending
   * impressions, orphan positives and examples not yet in a batch are naked, so the partition's
   * next owner re-joins them from the stream. Batches in flight are finished (their manifests
   * are in KV for the next owner; they ack their events).
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
        this.holds.release(t);
      }
      ps.retained.clear();
      this.handBackBuffered(p);
    }
    if (f?.restart) this.startFetching(p);
    return ps;
  }

  /**
   * Hands back (nak) the examples of `p` not yet in a batch. Training them after the partition's
   * next owner listed its manifests would apply them where that owner cannot see it: should their
   * acks then be lost (a consumer leader dying right after answering), the owner trains them again.
   */
  private handBackBuffered(p: number): void {
    if (!this.bufferedOf.has(p)) return;
    const mine = this.buffer.filter((b) => b.partition === p);
    this.buffer = this.buffer.filter((b) => b.partition !== p);
    this.bufferedOf.delete(p);
    void this.holds.settleBatch(mine, 'handBack');
    const waiters = this.bufferSpace;
    this.bufferSpace = [];
    waiters.forEach((w) => w());
  }

  /** Graceful handover: let go of `p`, then wait until every event of `p` we hold is acked or naked. */
  private async handOver(p: number): Promise<void> {
    const ps = await this.letGo(p);
    // every ack confirmed too: the next owner must not get an applied event back
    if (ps && (ps.tracked.size > 0 || ps.confirming > 0)) await new Promise<void>((r) => ps.idle.push(r));
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
        stream: this.feed.feedbackStream,
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
        this.joining.admit(m, ps);
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
    if (this.life.state !== 'running') return;
    const wall = Date.now();
    const now = wall - this.options.joinClock.lagMs;
    for (const ps of this.parts.values()) {
      ps.applied.prune(wall);
      // A partition with a backlog is judged by event time only: the events it has not read
      // yet may still label its pending impressions.
      if (ps.closed || !ps.caughtUp || ps.joiner.pendingCount + ps.joiner.orphanCount === 0) continue;
      this.joining.emitJoined(ps, ps.joiner.advance(now));
    }
  }

  /**
   * Keeps every message we hold ours: `working()` restarts its ack wait. The ack wait is short
   * (30 s) so that what a crashed worker or a lost NATS server leaves unacked comes back soon,
   * while a pending impression is held for its whole attribution window (5 min) and a batch may
   * retry for as long as a shard is down. A redelivery despite this (a stalled process) is
   * recognised by its sequence and not fed twice.
   */
  private refreshHeld(): void {
    const now = Date.now();
    // Only what has been held a third of the ack wait: most messages settle sooner (a batch),
    // and those never cost a publish. Checked every third, so none goes past two thirds.
    const due = now - this.options.consumer.ackWaitMs / 3;
    for (const ps of this.parts.values()) {
      for (const t of ps.tracked.values()) {
        if (t.since > due) continue;
        t.msg.working();
        t.since = now;
        this.counters.heldRefreshes++;
      }
    }
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
      const full = first ? this.fullBatch() : undefined;
      if (!first || (full === undefined && age < o.batch.maxWaitMs)) {
        if (
          !first &&
          (this.life.state === 'draining' || this.life.state === 'stopped' || this.life.state === 'failed')
        )
          return;
        await new Promise<void>((resolve) => {
          this.bufferFilled = resolve;
          // an empty buffer is polled; a partial one waits at most maxWaitMs for more events
          setTimeout(resolve, first ? o.batch.maxWaitMs - age : Math.min(o.batch.maxWaitMs, 20));
        });
        this.bufferFilled = undefined;
        continue;
      }
      await this.jobs.acquire();
      await this.slots.acquire();
      const take = this.takeBatch(full ?? (o.batch.crossPartition ? 'any' : this.buffer[0]?.partition));
      const waiters = this.bufferSpace;
      this.bufferSpace = [];
      waiters.forEach((r) => r());
      if (take.length === 0) {
        this.slots.release();
        this.jobs.release();
        continue;
      }
      if (take.some((b) => b.partition !== take[0]!.partition)) this.counters.crossPartitionBatches++;
      let slotHeld = true;
      const freeSlot = () => {
        if (!slotHeld) return;
        slotHeld = false;
        this.slots.release();
      };
      const job = this.runner.run(take, undefined, o.overlapPush ? freeSlot : undefined).finally(() => {
        freeSlot();
        this.jobs.release();
        this.inFlight.delete(job);
      });
      this.inFlight.add(job);
    }
  }

  /**
   * What a full batch can be taken from now: a partition with a full batch buffered (one
   * manifest copy), else, across partitions, any full batch of the oldest examples.
   */
  private fullBatch(): number | 'any' | undefined {
    const size = this.options.batch.size;
    for (const [p, n] of this.bufferedOf) if (n >= size) return p;
    return this.options.batch.crossPartition && this.buffer.length >= size ? 'any' : undefined;
  }

  /** Takes up to `batch.size` buffered examples of `partition` (or of any), oldest first. */
  private takeBatch(partition: number | 'any' | undefined): Buffered[] {
    if (partition === undefined) return [];
    const size = this.options.batch.size;
    const take: Buffered[] = [];
    const rest: Buffered[] = [];
    for (const b of this.buffer) {
      if ((partition === 'any' || b.partition === partition) && take.length < size) take.push(b);
      else rest.push(b);
    }
    this.buffer = rest;
    for (const b of take) {
      const left = (this.bufferedOf.get(b.partition) ?? 0) - 1;
      if (left > 0) this.bufferedOf.set(b.partition, left);
      else this.bufferedOf.delete(b.partition);
    }
    return take;
  }

  // ------------------------------------------------------------------ status

  /** The status the service API reports (without lag, which needs a server round trip). */
  status(): WorkerStatus {
    const now = Date.now();
    while (this.runner.rate.length > 0 && now - this.runner.rate[0]!.t > 10_000) this.runner.rate.shift();
    const n = this.runner.rate.reduce((a, b) => a + b.n, 0);
    const span = this.runner.rate.length > 0 ? Math.max(1000, now - this.runner.rate[0]!.t) : 10_000;
    return {
      id: this.id,
      cluster: this.options.cluster,
      state: this.life.state,
      partitions: this.partitions,
      members: this.leases?.members ?? [],
      leases: structuredClone(this.leases?.counters ?? noLeases),
      backend: this.pool?.backend ?? 'unknown',
      examples: this.metrics.examples,
      examplesPerS: Math.round((n * 1000) / span),
      batches: this.runner.clock,
      inFlightBatches: this.inFlight.size,
      bufferedEvents: this.buffer.length,
      acksConfirming: this.acks.pending,
      progressive: this.metrics.snapshot(),
      lrScale: this.lr.scale(),
      lrLowered: this.lr.lowered,
      lrDrifts: this.lr.drifts,
      guard: this.guard.status(),
      counters: { ...this.counters },
      timing: this.timing.snapshot(),
      joiner: this.joinerStatus(),
      deadLetters: { ...this.dlCounts },
      clippedValues: this.model?.encoder.clipped() ?? {},
      progressiveHistogram: this.metrics.mergeable(),
      progressiveWindowHistogram: this.metrics.windowMergeable(),
      dense: this.dense ? { ...this.dense.counters } : undefined,
      forgotten: { users: this.forgotten.size, droppedEvents: this.forgotten.droppedEvents },
      feedbackCluster: this.feed.cluster,
      served: this.served.snapshot(),
      hostRouting: this.router ? { ...this.router.stats } : undefined,
    };
  }

  /**
   * The guard tripped: writes the cluster's model pin (key `model-pin`, read by serving's
   * ModelPinFollower) unless one is there already (another worker's, or one not yet unpinned).
   */
  private async pinModel(t: GuardTrip): Promise<void> {
    this.log('warn', 'model guard tripped: pinning serving', { ...t });
    const record = { since: t.at, reason: t.reason, logloss: t.logloss, baseline: t.baseline, by: this.id };
    try {
      await this.kv?.create('model-pin', JSON.stringify(record));
    } catch (e) {
      // exists already: the cluster is pinned, the first reason stands
      if (!/exist|wrong last sequence/i.test((e as Error).message)) {
        this.log('error', 'model pin not written', { error: (e as Error).message });
      }
    }
  }

  /**
   * Forgets one user (`freshet user forget`, docs/privacy.md): its later events are dropped at
   * admission and what the joiners hold for it goes now. The caller records the deletion in the
   * cluster KV, which workers started later load.
   */
  forgetUser(user: string): { pending: number; orphans: number; resolved: number } {
    this.forgotten.add(user);
    const out = { pending: 0, orphans: 0, resolved: 0 };
    for (const ps of this.parts.values()) {
      if (ps.closed) continue;
      const d = ps.joiner.forgetUser(user);
      out.pending += d.pending;
      out.orphans += d.orphans;
      out.resolved += d.resolved;
    }
    return out;
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
    return { ...s, lag: await this.lag.read(s.partitions, (p) => this.consumers.get(p)) };
  }

  // ------------------------------------------------------------------ shutdown

  /**
   * Stops taking work, hands back events not yet batched (nak), finishes in-flight batches
   * (within `drainMs`; then aborts their retries, which hands them back too), gives up the
   * leases so other workers take the partitions at once, and closes.
   */
  stop(drainMs?: number): Promise<void> {
    this.drainMs ??= drainMs ?? 10_000;
    return this.life.stop();
  }

  private async doStop(from: 'running' | 'failed'): Promise<void> {
    // a failed start tore down what it had made
    if (from === 'failed') return this.teardown();
    const drainMs = this.drainMs ?? 10_000;
    clearInterval(this.joinTimer);
    // Let go of every partition: the joiners' held events are handed back, for the next owner
    // to re-join; examples not yet batched are handed back too (their events redelivered).
    this.bufferSpace.forEach((r) => r());
    // started before letting go: a partition's manifest recovery may be retrying a push
    const timer = setTimeout(() => this.abort.abort(), drainMs);
    // what the replica holds goes to the shards before the partitions' next owners look
    await this.dense?.flush().catch(() => undefined);
    await Promise.all([...this.parts.keys()].map((p) => this.letGo(p)));
    void this.holds.settleBatch(this.buffer.splice(0), 'handBack');
    this.bufferedOf.clear();
    this.bufferSpace.forEach((r) => r());
    await Promise.allSettled([...this.inFlight]);
    await this.dense?.stop();
    // applied batches' acks confirmed before the connection goes (bounded by the drain timer)
    await this.acks.whenIdle();
    clearTimeout(timer);
    this.bufferFilled?.();
    await this.batcherDone;
    await this.teardown();
  }

  private async teardown(): Promise<void> {
    clearInterval(this.joinTimer);
    clearInterval(this.refreshTimer);
    // the last statistics, for serving (the timer stops)
    await this.encoderStats?.stop().catch(() => undefined);
    await this.leases?.stop().catch(() => undefined);
    await this.router?.stop().catch(() => undefined);
    await this.service?.stop().catch(() => undefined);
    await this.pool?.close().catch(() => undefined);
    if (this.ownNc) await this.nc?.drain().catch(() => undefined);
  }
}

/** How long a recovered batch's (or an unconfirmed ack's) redelivery may still come: a few ack waits. */
const recoveredSpanMs = (o: WorkerOptions) => 3 * o.consumer.ackWaitMs;

const noLeases: LeaseCounters = {
  acquired: 0,
  takenOver: 0,
  resumed: 0,
  handedOver: 0,
  lost: { taken: 0, deleted: 0, expired: 0 },
  unansweredRounds: 0,
};

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
