import {
  AckPolicy,
  DeliverPolicy,
  headers as natsHeaders,
  nanos,
  type Consumer,
  type ConsumerMessages,
  type JetStreamClient,
  type JsMsg,
  type KV,
  type NatsConnection,
  type Service,
} from 'nats';
import { connectNats } from '@freshet/nats';
import { createModel, type Example, type Model } from '@freshet/model';
import {
  compileParseOptions,
  FreshetError,
  hashString64,
  hasCode,
  parseEvent,
  subjects,
  type DeadLetterReason,
  type Subjects,
} from '@freshet/protocol';
import { ComputePool } from './compute-pool.js';
import { LrSchedule } from './lr-schedule.js';
import { PartitionLeases } from './partition-leases.js';
import { ProgressiveMetrics, type ProgressiveSnapshot } from './progressive.js';
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
}

export interface WorkerCounters {
  acked: number;
  naked: number;
  deadLettered: number;
  /** Non-example events acked without training (no joiner wired for them). */
  ignored: number;
  pushes: number;
  pushDuplicates: number;
  staleRounds: number;
  retries: number;
  failedBatches: number;
  nonFiniteBatches: number;
  maxStaleness: number;
}

/** Things a caller may hand a worker instead of letting it create them (tests, the CLI). */
export interface WorkerDeps {
  /** An open connection to use (not closed by stop()); otherwise one is opened from options.nats. */
  nc?: NatsConnection;
  signal?: AbortSignal;
  /** Structured log lines (the CLI prints them); silent by default. */
  log?: (level: 'info' | 'warn' | 'error', msg: string, fields?: Record<string, unknown>) => void;
}

interface Buffered {
  msg: JsMsg;
  partition: number;
  example: Example;
  /** Local receive time (batch max-wait). */
  at: number;
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
  private model: Model | undefined;
  private pool: ComputePool | undefined;
  private client: ShardClient | undefined;
  private leases: PartitionLeases | undefined;
  private service: Service | undefined;
  private readonly consumers = new Map<number, Consumer>();
  private readonly fetching = new Map<
    number,
    { stop: boolean; iter?: ConsumerMessages; done: Promise<void> }
  >();
  private readonly outstanding = new Map<number, number>();
  private readonly idleWaiters = new Map<number, (() => void)[]>();
  private buffer: Buffered[] = [];
  private bufferSpace: (() => void)[] = [];
  private bufferFilled: (() => void) | undefined;
  private readonly inFlight = new Set<Promise<void>>();
  private readonly slots: Semaphore;
  private batcherDone: Promise<void> | undefined;
  private readonly abort = new AbortController();
  private stopping: Promise<void> | undefined;
  private readonly metrics: ProgressiveMetrics;
  private readonly lr: LrSchedule;
  private readonly rate: { t: number; n: number }[] = [];
  private clock = 0;
  private readonly parseOpts = compileParseOptions({ maxAgeMs: Infinity });
  readonly counters: WorkerCounters = {
    acked: 0,
    naked: 0,
    deadLettered: 0,
    ignored: 0,
    pushes: 0,
    pushDuplicates: 0,
    staleRounds: 0,
    retries: 0,
    failedBatches: 0,
    nonFiniteBatches: 0,
    maxStaleness: 0,
  };

  constructor(options: WorkerOptionsInput | WorkerOptions, deps: WorkerDeps = {}) {
    this.options = compileWorkerOptions(options as WorkerOptionsInput);
    this.subj = subjects(this.options.cluster);
    this.deps = deps;
    this.slots = new Semaphore(this.options.maxInFlightBatches);
    this.metrics = new ProgressiveMetrics({ window: this.options.metrics.window });
    this.lr = new LrSchedule(this.options.lr);
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
          lost: (p) => void this.stopFetching(p),
        },
      );
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
    if (this.fetching.has(p) || this._state === 'draining' || this._state === 'stopped') return;
    const entry: { stop: boolean; iter?: ConsumerMessages; done: Promise<void> } = {
      stop: false,
      done: Promise.resolve(),
    };
    entry.done = this.fetchLoop(p, entry).catch((e: unknown) => {
      this.log('warn', 'fetch loop ended', { partition: p, error: String(e) });
    });
    this.fetching.set(p, entry);
    this.log('info', 'partition acquired', { partition: p });
  }

  private async stopFetching(p: number): Promise<void> {
    const f = this.fetching.get(p);
    if (!f) return;
    // The open fetch is left to run out (≤ fetchExpiresMs): stopping its iterator would drop
    // messages already sent to us, which would then sit unacked until the ack wait expires.
    f.stop = true;
    await f.done;
    this.fetching.delete(p);
  }

  /** Graceful handover: stop fetching, then wait until every event of `p` we hold is acked or naked. */
  private async handOver(p: number): Promise<void> {
    await this.stopFetching(p);
    if ((this.outstanding.get(p) ?? 0) > 0) {
      await new Promise<void>((r) => {
        const l = this.idleWaiters.get(p) ?? [];
        l.push(r);
        this.idleWaiters.set(p, l);
      });
    }
    this.log('info', 'partition handed over', { partition: p });
  }

  private settle(p: number, n = 1): void {
    const left = (this.outstanding.get(p) ?? 0) - n;
    this.outstanding.set(p, left);
    if (left <= 0) {
      const w = this.idleWaiters.get(p);
      this.idleWaiters.delete(p);
      w?.forEach((r) => r());
    }
  }

  private async fetchLoop(p: number, f: { stop: boolean; iter?: ConsumerMessages }): Promise<void> {
    const consumer = this.consumers.get(p)!;
    const o = this.options;
    while (!f.stop) {
      const room = o.maxBufferedEvents - this.buffer.length;
      if (room <= 0) {
        await new Promise<void>((r) => this.bufferSpace.push(r));
        continue;
      }
      let iter: ConsumerMessages;
      try {
        iter = await consumer.fetch({
          max_messages: Math.min(room, o.batch.size * 2),
          expires: o.consumer.fetchExpiresMs,
        });
      } catch (e) {
        if (f.stop) return;
        this.log('warn', 'fetch failed', { partition: p, error: String(e) });
        await new Promise((r) => setTimeout(r, 250));
        continue;
      }
      f.iter = iter;
      for await (const m of iter) {
        if (f.stop) {
          // arrived after we let go of the partition: hand it back for its next owner at once
          m.nak();
          this.counters.naked++;
          continue;
        }
        this.outstanding.set(p, (this.outstanding.get(p) ?? 0) + 1);
        this.admit(m, p);
      }
      f.iter = undefined;
    }
  }

  private admit(m: JsMsg, p: number): void {
    const r = parseEvent(m.data, this.parseOpts);
    if (!r.ok) {
      this.deadLetter([m], r.reason, r.message);
      this.settle(p);
      return;
    }
    const ev = r.event;
    if (ev.kind !== 'example') {
      // The impression–click joiner is not wired into this loop yet; such events are consumed.
      m.ack();
      this.counters.ignored++;
      this.counters.acked++;
      this.settle(p);
      return;
    }
    this.buffer.push({
      msg: m,
      partition: p,
      example: { features: ev.features, label: ev.label, weight: ev.weight, ts: ev.ts },
      at: Date.now(),
    });
    const b = this.bufferFilled;
    if (b && this.buffer.length >= this.options.batch.size) {
      this.bufferFilled = undefined;
      b();
    }
  }

  private deadLetter(msgs: JsMsg[], reason: DeadLetterReason, message: string): void {
    for (const m of msgs) {
      const h = natsHeaders();
      h.set('Freshet-Reason', reason);
      h.set('Freshet-Message', message.replace(/[\r\n]/g, ' ').slice(0, 256));
      h.set('Freshet-Worker', this.id);
      try {
        this.nc?.publish(this.subj.deadLetter, m.data, { headers: h });
      } catch {
        // the event stays terminated even if the dead letter could not be published
      }
      m.term();
      this.counters.deadLettered++;
    }
  }

  // ------------------------------------------------------------------ batching

  private async batcher(): Promise<void> {
    const o = this.options;
    for (;;) {
      const first = this.buffer[0];
      const age = first ? Date.now() - first.at : 0;
      if (!first || (this.buffer.length < o.batch.size && age < o.batch.maxWaitMs)) {
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
      const take = this.buffer.splice(0, o.batch.size);
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

  /** Stable across redeliveries of the same events: shards dedupe a re-push of the same batch. */
  private pushId(items: Buffered[]): string {
    hashString64(items.map((b) => b.msg.seq).join(','), scratch);
    return `${hex(scratch[0]!)}${hex(scratch[1]!)}n${items.length}`;
  }

  private async runBatch(items: Buffered[]): Promise<void> {
    const o = this.options;
    const msgs = items.map((b) => b.msg);
    const model = this.model!;
    const client = this.client!;
    const pool = this.pool!;
    const examples = items.map((b) => b.example);
    const onRetry = () => {
      this.counters.retries++;
      // keep the events ours while we retry (resets their ack-wait timer)
      for (const m of msgs) m.working();
    };
    let eventTs = Number.POSITIVE_INFINITY;
    for (const m of msgs) eventTs = Math.min(eventTs, Number(m.info.timestampNanos / 1_000_000));
    const id = this.pushId(items);
    let pending: Set<number> | undefined;
    let scored = false;
    try {
      for (let round = 0; ; round++) {
        const batch = model.encode(examples);
        const labels = batch.labels.slice();
        const weights = batch.weights.slice();
        const plan = client.route(batch);
        pending ??= new Set(plan.parts.map((x) => x.shard));
        const pulled = await client.pull(plan, { clock: this.clock, onRetry });
        let r: Awaited<ReturnType<ComputePool['gradients']>>;
        for (let attempt = 0; ; attempt++) {
          try {
            r = await pool.gradients(batch, pulled.rows, pulled.shared);
            break;
          } catch (e) {
            if (!hasCode(e, 'OVERLOADED') || attempt > 20) throw e;
            await new Promise((res) => setTimeout(res, 10 * (attempt + 1)));
          }
        }
        if (!scored) {
          scored = true;
          const loss = this.metrics.add(r.preds, labels, weights);
          this.lr.observe(loss, labels.length);
        }
        if (!allFinite(r.grads)) {
          this.counters.nonFiniteBatches++;
          this.deadLetter(msgs, 'NON_FINITE', 'non-finite gradient: update not applied');
          this.settleAll(items);
          return;
        }
        const out = await client.push(plan, pulled, r.grads, {
          id,
          clock: this.clock,
          eventTs,
          lrScale: this.lr.scale(),
          only: pending,
          onRetry,
        });
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
      for (const m of msgs) m.ack();
      this.counters.acked += msgs.length;
      this.clock++;
      this.rate.push({ t: Date.now(), n: msgs.length });
      this.settleAll(items);
    } catch (e) {
      // Not applied everywhere: hand the events back for redelivery; never ack them.
      this.counters.failedBatches++;
      this.log('warn', 'batch handed back', {
        error: String(e),
        code: e instanceof FreshetError ? e.code : 'INTERNAL',
        stack: process.env.FRESHET_DEBUG_STACK ? (e as Error).stack : undefined,
        events: msgs.length,
        pendingShards: pending ? [...pending] : [],
      });
      for (const m of msgs) m.nak(o.consumer.nakDelayMs);
      this.counters.naked += msgs.length;
      this.settleAll(items);
    }
  }

  private settleAll(items: Buffered[]): void {
    const per = new Map<number, number>();
    for (const b of items) per.set(b.partition, (per.get(b.partition) ?? 0) + 1);
    for (const [p, n] of per) this.settle(p, n);
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
      counters: { ...this.counters, retries: this.counters.retries },
    };
  }

  private async statusWithLag(): Promise<WorkerStatus> {
    const s = this.status();
    const lag: Record<string, number> = {};
    await Promise.all(
      s.partitions.map(async (p) => {
        try {
          const info = await this.consumers.get(p)?.info(true);
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
    await Promise.all([...this.fetching.keys()].map((p) => this.stopFetching(p)));
    const rest = this.buffer.splice(0);
    for (const b of rest) {
      b.msg.nak();
      this.counters.naked++;
    }
    this.settleAll(rest);
    this.bufferSpace.forEach((r) => r());
    const timer = setTimeout(() => this.abort.abort(), drainMs);
    await Promise.allSettled([...this.inFlight]);
    clearTimeout(timer);
    this.bufferFilled?.();
    await this.batcherDone;
    await this.teardown();
    this._state = 'stopped';
    this.log('info', 'worker stopped');
  }

  private async teardown(): Promise<void> {
    await this.leases?.stop().catch(() => undefined);
    await this.service?.stop().catch(() => undefined);
    await this.pool?.close().catch(() => undefined);
    if (this.ownNc) await this.nc?.drain().catch(() => undefined);
  }
}

/** Creates and starts a worker (what the CLI's `freshet worker` calls). */
export async function startWorker(options: WorkerOptionsInput, deps: WorkerDeps = {}): Promise<Worker> {
  const w = new Worker(options, deps);
  await w.start();
  return w;
}
