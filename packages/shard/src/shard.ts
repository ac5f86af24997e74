import { chmodSync, mkdirSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { NatsConnection, Service, Subscription } from 'nats';
import { z } from 'zod';
import {
  connectNats,
  frameEndpoint,
  jsonLineLog,
  Lifecycle,
  readModelSpec,
  type ActorLog,
  type ActorState,
  type Endpoint,
  type FrameHandler,
  type ProcessActor,
} from '@freshet/nats';
import {
  decodePull,
  decodePush,
  decodeSnapshotRequest,
  encodeDelta,
  encodePullReply,
  encodePush,
  encodePushReply,
  encodeSnapshotPage,
  FreshetError,
  type PushRequest,
  hasCode,
  shardStatusSubject,
  subjects,
  type ErrorCode,
  type HostPartKind,
  type ModelSpec,
  type ShardStatus,
} from '@freshet/protocol';
import {
  beginCheckpoint,
  installCheckpoint,
  listCheckpoints,
  loadCheckpoint,
  writeCheckpoint,
} from './checkpoint.js';
import { CheckpointUploader, isFreshDataDir, restoreFromStore } from './checkpoint-store.js';
import { ObjectStoreCheckpoints } from './object-store-checkpoints.js';
import { DeltaPublisher } from './delta-publisher.js';
import type { DeltaSink } from './delta-publisher.js';
import type { HostedShard, RestoreInfo } from './hosted-shard.js';
import { forgetPlan } from './forget.js';
import {
  compileShardOptions,
  deltaIntervalOf,
  type ShardOptions,
  type ShardOptionsInput,
} from './shard-options.js';
import { PullSessions } from './pull-sessions.js';
import { ShardCore } from './shard-core.js';
import { RecentTimings, SspGate } from './staleness.js';
import { combineStep, isSyncModel, SyncSteps, type StepReply } from './sync-steps.js';
import { listSegments, replayWal, truncateWal, Wal } from './wal.js';

/**
 * An aligned copy of a message payload when it sits at an odd offset. NATS hands payloads out as
 * Node Buffers, whose `slice()` does not copy, so decodeFrame's own realignment keeps the odd
 * offset and typed-array views throw; copying here works around that until protocol does.
 */
export function aligned(data: Uint8Array): Uint8Array {
  return data.byteOffset % 4 === 0 ? data : new Uint8Array(data);
}

/** A restore's `checkpoint` naming an object of the Object Store (a rollback). */
export const OBJECT_STORE_PREFIX = 'object-store:';

const clockMessageSchema = z.object({ clock: z.number().int().min(0) });

/** Resolves after `ms`, or at once when `signal` aborts (a waiting start must not hold a stop). */
function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(t);
      signal?.removeEventListener('abort', done);
      resolve();
    };
    const t = setTimeout(done, ms);
    signal?.addEventListener('abort', done, { once: true });
  });
}

/** Lifecycle of a shard actor: the actor contract's states (a restore passes through starting). */
export type ShardState = ActorState;

/** Extra wiring for a shard: a shared connection (tests, benches) and a stop signal. */
export interface ShardDeps {
  /** Use this connection instead of opening one (it is not closed by stop()). */
  nc?: NatsConnection;
  signal?: AbortSignal;
  /** Diagnostics (default: JSON lines on stderr). */
  log?: ActorLog;
  /**
   * The shard host's host deltas (its option `hostDeltas`), or a shard thread's way to them:
   * publish deltas through them.
   */
  hostDeltas?: DeltaSink;
}

export type { RestoreInfo };

/**
 * The parameter-server shard actor: owns a {@link ShardCore}, serves pull/push/snapshot over
 * NATS, publishes deltas, logs every accepted push before acknowledging it, checkpoints
 * periodically and registers with the NATS service API.
 */
export class Shard implements ProcessActor, HostedShard {
  readonly role = 'shard';
  readonly options: ShardOptions;
  private readonly life: Lifecycle;
  private nc: NatsConnection | undefined;
  private ownsNc = false;
  private _core: ShardCore | undefined;
  private wal: Wal | undefined;
  private endpoints: Endpoint[] = [];
  /** The pull and push subjects, for {@link requestHandler}. */
  private requestSubjects: Record<HostPartKind, string> | undefined;
  private service: Service | undefined;
  private deltas: DeltaPublisher | undefined;
  private ssp: SspGate | undefined;
  /** The `sync` policy's steps (docs/learning-quality.md). */
  private sync: SyncSteps | undefined;
  private maint: NodeJS.Timeout | undefined;
  private clockSub: Subscription | undefined;
  private checkpointing: Promise<void> | undefined;
  private lastCheckpointAt = Date.now();
  /** Mirrored log segments (`checkpoint.walSegmentMs`): last seal, bytes sealed since the checkpoint. */
  private lastSealAt = Date.now();
  private sealedSinceCheckpoint = 0;
  private lastCheckpoint: ShardStatus['lastCheckpoint'] = null;
  private readonly inflightIds = new Map<string, Promise<void>>();
  private readonly applyTimings = new RecentTimings();
  private sessions: PullSessions | undefined;
  private readonly walTimings = new RecentTimings();
  private rate = { at: Date.now(), updates: 0, pushes: 0, updatesPerS: 0, pushesPerS: 0 };
  private readonly log: ActorLog;
  private spec: ModelSpec | undefined;
  private reloading: Promise<RestoreInfo & { versionBefore: number }> | undefined;
  /** Uploads checkpoints to the Object Store (`checkpoint.store: 'object-store'`). */
  uploader: CheckpointUploader | undefined;
  /** Set once start() restored state from disk. */
  restore: RestoreInfo | undefined;
  private _handedOff = false;
  private _finalCheckpoint = false;

  constructor(
    input: ShardOptionsInput,
    private readonly deps: ShardDeps = {},
  ) {
    this.options = compileShardOptions(input);
    this.log = deps.log ?? jsonLineLog({ role: 'shard', id: this.id });
    this.life = new Lifecycle(
      { start: (signal) => this.doStart(signal), stop: (from) => this.doStop(from) },
      { name: this.id, log: this.log, signal: deps.signal },
    );
  }

  get state(): ShardState {
    return this.life.state;
  }
  get id(): string {
    return `shard-${this.options.shard}`;
  }
  get cluster(): string {
    return this.options.cluster;
  }
  /** The ready line's shard fields: its number and what it recovered from disk. */
  readyFields(): Record<string, unknown> {
    return { shard: this.options.shard, restore: this.restore ?? null };
  }
  /**
   * Stopped with everything it applied in the Object Store (a final checkpoint written and
   * uploaded, nothing logged after it): another host may restore it from there alone.
   */
  get handedOff(): boolean {
    return this._handedOff;
  }
  /** stop() wrote a checkpoint of everything applied (its upload may still be missing). */
  get finalCheckpointWritten(): boolean {
    return this._finalCheckpoint;
  }
  /** The in-memory state (for tests and in-process benches). */
  get core(): ShardCore {
    if (!this._core) throw new FreshetError('NOT_READY', 'shard not started');
    return this._core;
  }

  /** Connects, loads the model, restores from disk, then starts serving. */
  start(): Promise<void> {
    return this.life.start();
  }

  private async doStart(signal: AbortSignal): Promise<void> {
    const o = this.options;
    try {
      this.nc =
        this.deps.nc ??
        (await connectNats(o.nats, `freshet-shard-${o.cluster}-${o.shard}`, {
          inboxPrefix: subjects(o.cluster).inboxPrefix('shard'),
        }));
      this.ownsNc = !this.deps.nc;
      const spec = o.model ?? (await this.modelFromKv(this.nc, signal));
      this.spec = spec;
      this._core = this.newCore(spec);
      let deltaSeq = 0;
      if (o.dataDir) {
        // WAL and checkpoints are the model: private to the shard's user, also an existing dir
        mkdirSync(o.dataDir, { recursive: true, mode: 0o700 });
        chmodSync(o.dataDir, 0o700);
        const t0 = performance.now();
        const fetched = await this.openCheckpointStore(this.nc, spec, o.dataDir);
        const fetchMs = fetched ? Math.round(performance.now() - t0) : undefined;
        deltaSeq = await this.restoreFromDisk(o.dataDir, fetchMs);
        this.wal = await Wal.open(o.dataDir, o.fsync, this.restore?.checkpointSegment ?? 0);
        this.uploader?.schedule();
      }
      if (spec.tables.some((t) => t.staleness.policy === 'ssp')) {
        this.ssp = new SspGate(o.limits.sspLiveMs, o.limits.sspTimeoutMs);
        this.clockSub = this.subscribeClocks(this.nc, this.ssp);
      }
      if (isSyncModel(spec)) {
        this.sync = new SyncSteps(o.limits.syncStepTimeoutMs, (reqs) => this.applyStep(reqs));
      }
      this.serve(this.nc, deltaSeq);
      await this.registerService(this.nc, spec);
      // the server has our subscriptions once this returns: a started shard is reachable, and a
      // client on another connection does not get "no responders" right after start()
      await this.nc.flush();
      this.maint = setInterval(() => this.maintain(), o.maintenanceIntervalMs);
    } catch (e) {
      await this.release();
      throw e;
    }
  }

  private newCore(spec: ModelSpec): ShardCore {
    const o = this.options;
    return new ShardCore({
      spec,
      shard: o.shard,
      shards: o.shards,
      checkOwnership: o.checkOwnership,
      maxPushRows: o.limits.maxPushRows,
      maxPullKeys: o.limits.maxPullKeys,
      sketchWidth: o.limits.sketchWidth,
      sketchDecayMs: o.limits.sketchDecayMs,
      recentPushIds: o.limits.recentPushIds,
      dcMaxWorkers: o.limits.dcMaxWorkers,
      dcMaxRowsPerWorker: o.limits.dcMaxRowsPerWorker,
    });
  }

  /**
   * Waits for the model spec `freshet init` stores, for as long as it takes: a shard that starts
   * before init (a Kubernetes rollout applies everything at once) must wait, not crash-loop. Says
   * what it waits for every `modelWaitLogMs`; stop() or the signal ends the wait. `modelWaitMs`
   * > 0 bounds it for embedders that prefer an error.
   */
  private async modelFromKv(nc: NatsConnection, signal: AbortSignal): Promise<ModelSpec> {
    const o = this.options;
    const t0 = Date.now();
    let lastLog = -Infinity;
    for (;;) {
      let reason: string;
      try {
        const r = await readModelSpec(nc, o.cluster);
        if (r.state === 'present') return r.spec;
        reason = r.reason;
      } catch (err) {
        if (err instanceof FreshetError) throw err;
        // NATS not settled yet (no JetStream leader, a reconnect): the same wait
        reason = (err as Error).message;
      }
      if (signal.aborted) {
        throw new FreshetError('SHUTTING_DOWN', `stopped while waiting for the model spec (${reason})`);
      }
      const waited = Date.now() - t0;
      if (o.modelWaitMs > 0 && waited > o.modelWaitMs) {
        throw new FreshetError(
          'CONFIG',
          `${reason} after ${o.modelWaitMs} ms: run \`freshet init --config FILE\` for cluster ${o.cluster}`,
        );
      }
      if (Date.now() - lastLog >= o.modelWaitLogMs) {
        lastLog = Date.now();
        this.log(
          'warn',
          `waiting for the model spec (${reason}, ${Math.round(waited / 1000)} s so far): ` +
            `run \`freshet init --config FILE\` for cluster ${o.cluster}`,
        );
      }
      await sleep(500, signal);
    }
  }

  /**
   * Worker clock heartbeats (`subjects.workerClock(worker)`, JSON `{"clock": n}`): a worker that
   * is computing but not pulling stays live for SSP. Malformed messages are ignored (counted).
   */
  private subscribeClocks(nc: NatsConnection, ssp: SspGate): Subscription {
    const s = subjects(this.options.cluster);
    const prefix = s.workerClock('');
    return nc.subscribe(s.workerClockAll, {
      callback: (err, msg) => {
        if (err) return;
        const worker = msg.subject.slice(prefix.length);
        let parsed: unknown;
        try {
          parsed = JSON.parse(new TextDecoder().decode(msg.data));
        } catch {
          parsed = undefined;
        }
        const r = clockMessageSchema.safeParse(parsed);
        if (!r.success || !worker) {
          this._core?.countReject('BAD_REQUEST');
          return;
        }
        ssp.observe(worker, r.data.clock);
      },
    });
  }

  /** This shard's checkpoints in the cluster's Object Store bucket (created when missing). */
  private objectStore(nc: NatsConnection, spec: ModelSpec): Promise<ObjectStoreCheckpoints> {
    const o = this.options;
    return ObjectStoreCheckpoints.open(nc, {
      bucket: o.checkpoint.bucket ?? subjects(o.cluster).objectStore,
      shard: o.shard,
      shards: o.shards,
      model: spec.name,
      replicas: o.checkpoint.replicas,
      keep: o.checkpoint.keep,
      log: this.log,
    });
  }

  /**
   * With `checkpoint.store: 'object-store'`: opens the bucket and, when the data dir is fresh (a
   * new host), installs the newest verified checkpoint of this shard from it. Returns whether it
   * did. The log after that checkpoint stayed on the old host (docs/checkpoints.md).
   */
  private async openCheckpointStore(nc: NatsConnection, spec: ModelSpec, dir: string): Promise<boolean> {
    const o = this.options;
    if (o.checkpoint.store !== 'object-store') return false;
    const store = await this.objectStore(nc, spec);
    this.uploader = new CheckpointUploader(store, dir, this.log, o.checkpoint.walSegmentMs > 0);
    if (!(await isFreshDataDir(dir))) return false;
    const got = await restoreFromStore(store, dir, o.fsync, this.log);
    if (!got) return false;
    if (got.checkpoint) this.uploader.have(got.checkpoint.segment);
    this.log('info', 'restoring from the object store', {
      checkpoint: got.checkpoint?.name ?? null,
      segments: got.segments,
      version: got.version,
    });
    return true;
  }

  /** `fetchMs`: how long fetching its checkpoint from the Object Store took (undefined: not fetched). */
  private async restoreFromDisk(dir: string, fetchMs?: number): Promise<number> {
    const t0 = performance.now();
    const core = this.core;
    const ck = await loadCheckpoint(dir, core);
    let deltaSeq = ck?.deltaSeq ?? 0;
    let rejectedRecords = 0;
    const ends = new Map<number, number>();
    const r = await replayWal(dir, ck?.segment ?? 0, (rec, segment) => {
      if (rec.kind === 'push') {
        try {
          core.applyPush(decodePush(rec.payload), rec.ts, { tau: rec.tau, dcApplied: rec.dcApplied });
        } catch (e) {
          // rolled back whole; replaying it as it once was applied would poison its rows again
          if (!hasCode(e, 'NON_FINITE_STATE')) throw e;
          rejectedRecords++;
          core.countReject('NON_FINITE_STATE');
        }
      } else if (rec.kind === 'evict') {
        core.evict(rec.t, rec.keys);
      } else {
        deltaSeq = Math.max(deltaSeq, rec.seq);
      }
      ends.set(segment, core.version);
    });
    // replayed segments are sealed now: mirrored (unless the store has them), empty ones too, so
    // the store's segments stay consecutive
    let end = ck?.version ?? 0;
    for (const s of listSegments(dir)) {
      if (s <= (ck?.segment ?? 0)) continue;
      end = ends.get(s) ?? end;
      this.uploader?.sealed(s, end);
    }
    if (ck) await truncateWal(dir, ck.segment);
    this.restore = {
      checkpointSegment: ck?.segment ?? null,
      checkpointSource: ck ? (fetchMs !== undefined ? 'object-store' : 'dir') : null,
      checkpointVersion: ck?.version ?? 0,
      fetchMs: fetchMs ?? 0,
      replayedRecords: r.records,
      replayedSegments: r.segments,
      rejectedRecords,
      version: core.version,
      ms: Math.round(performance.now() - t0),
    };
    if (ck) {
      this.lastCheckpoint = { at: ck.createdAt, ms: 0, bytes: ck.bytes, segment: ck.segment, pauseMs: 0 };
    }
    return deltaSeq;
  }

  private guard(): void {
    const state = this.life.state;
    if (state === 'running') return;
    if (state === 'starting' || state === 'created') throw new FreshetError('NOT_READY', `shard ${state}`);
    throw new FreshetError('SHUTTING_DOWN', `shard ${state}`);
  }

  /**
   * The pull or push handler behind this shard's endpoint, with the endpoint's limits, for a
   * request that came inside a shard host's message (ps-mux.ts); undefined while the shard serves
   * none (starting, restoring, stopped).
   */
  requestHandler(kind: HostPartKind): FrameHandler | undefined {
    // per part of every host message: the subjects are built once
    this.requestSubjects ??= {
      pull: subjects(this.options.cluster).pull(this.options.shard),
      push: subjects(this.options.cluster).push(this.options.shard),
    };
    const subject = this.requestSubjects[kind];
    return this.endpoints.find((e) => e.subject === subject)?.handler;
  }

  hostCall(kind: HostPartKind, frame: Uint8Array): Uint8Array | Promise<Uint8Array> | undefined {
    return this.requestHandler(kind)?.call(frame);
  }

  /**
   * After stop(): uploads the final checkpoint if stop() could not (the Object Store was away),
   * so that another host may restore everything this one applied; throws while it cannot.
   */
  async finishHandOff(): Promise<void> {
    if (this._handedOff) return;
    if (!this._finalCheckpoint)
      throw new Error('the final checkpoint was not written (restart this host: it recovers from its log)');
    const up = this.uploader;
    if (!up) throw new Error('no Object Store uploader');
    up.schedule();
    await up.flush();
    this._handedOff = true;
  }

  private countError(err: FreshetError | Error): void {
    this._core?.countReject(err instanceof FreshetError ? err.code : 'INTERNAL');
  }

  private serve(nc: NatsConnection, deltaSeq: number): void {
    const o = this.options;
    const s = subjects(o.cluster);
    const core = this.core;
    const common = {
      maxInFlight: o.limits.maxInFlight,
      maxBytes: o.limits.maxPushBytes,
      onError: (e: FreshetError | Error) => this.countError(e),
    };
    const sessions = (this.sessions = new PullSessions(o.limits.pullSessionBytes, o.limits.pullSessionTtlMs));
    const sspBound = Math.min(
      ...core.tables.filter((t) => t.spec.staleness.policy === 'ssp').map((t) => t.spec.staleness.bound),
    );
    this.endpoints.push(
      frameEndpoint(
        nc,
        s.pull(o.shard),
        (data) => {
          this.guard();
          const req = decodePull(aligned(data));
          const answer = () => {
            const reply = core.pull(req);
            if (sessions.remember(req)) reply.session = true;
            return encodePullReply(reply);
          };
          if (this.ssp && req.worker !== undefined && req.clock !== undefined) {
            const wait = this.ssp.admit(req.worker, req.clock, sspBound);
            if (wait) return wait.then(answer);
          }
          return answer();
        },
        common,
      ),
      frameEndpoint(nc, s.push(o.shard), (data) => this.handlePush(data), common),
      frameEndpoint(
        nc,
        s.snapshot(o.shard),
        (data) => {
          this.guard();
          return encodeSnapshotPage(
            core.snapshot(decodeSnapshotRequest(aligned(data)), this.deltas?.seq ?? 0),
          );
        },
        common,
      ),
    );
    const host = this.deps.hostDeltas;
    this.deltas = new DeltaPublisher(
      host ? host.sink(o.shard) : (frame) => nc.publish(s.delta(o.shard), frame),
      o.shard,
      core,
      this.wal,
      deltaIntervalOf(o),
      o.limits.maxDeltaBytes,
      deltaSeq,
      (e) => this.fail(e),
      o.int8Deltas ? 'q8' : o.halfDeltas ? 'f16' : 'f32',
      host,
    );
    this.deltas.start();
  }

  private handlePush(raw: Uint8Array): Uint8Array | Promise<Uint8Array> {
    this.guard();
    const data = aligned(raw);
    const core = this.core;
    const sent = decodePush(data);
    const prior = core.appliedVersion(sent.id);
    if (prior !== undefined) {
      core.duplicates++;
      const reply = encodePushReply({ version: prior, staleness: 0, applied: 0, duplicate: true });
      // A retry of a push still being logged is answered once the original is durable.
      const pending = this.inflightIds.get(sent.id);
      return pending ? pending.then(() => reply) : reply;
    }
    const req = this.sessions ? this.sessions.resolve(sent) : sent;
    if (this.sync && !req.add) {
      // a step's push is answered duplicate from here on, or refused for good
      this.sessions?.release(sent.session);
      return this.joinStep(this.sync, req);
    }
    this.ssp?.observe(req.worker, req.clock);
    const ts = Date.now();
    const t0 = performance.now();
    const res = core.applyPush(req, ts);
    this.sessions?.release(sent.session);
    const t1 = performance.now();
    this.applyTimings.record(t1 - t0);
    const reply = encodePushReply({
      version: res.version,
      staleness: res.tau,
      applied: res.applied,
      duplicate: false,
      ...(req.add && res.densePrev.length > 0 ? { prev: res.densePrev } : {}),
    });
    if (!this.wal) return reply;
    // The frame as applied: the request bytes (copied: the connection may reuse its buffer),
    // or the compensated push for DC-ASGD so a replay applies exactly the same update.
    // A push that named its pull is logged with the keys filled in: a replay has no sessions.
    const payload =
      res.dcApplied || req !== sent
        ? encodePush(res.dcApplied ? res.effective : req)
        : data === raw
          ? raw.slice()
          : data;
    const durable = this.wal.append({ kind: 'push', ts, tau: res.tau, dcApplied: res.dcApplied, payload });
    this.inflightIds.set(req.id, durable);
    return durable.then(
      () => {
        this.inflightIds.delete(req.id);
        this.walTimings.record(performance.now() - t1);
        return reply;
      },
      (e: unknown) => {
        this.inflightIds.delete(req.id);
        this.fail(e);
        throw e;
      },
    );
  }

  /**
   * A push under the `sync` policy: checked alone (a bad push is refused without failing its
   * step), then answered once its whole step is applied and logged. A retry of a push still in
   * the open step waits for it and is answered duplicate.
   */
  private joinStep(sync: SyncSteps, req: PushRequest): Promise<Uint8Array> {
    const core = this.core;
    const open = sync.pending(req.id);
    if (open) {
      core.duplicates++;
      return open.then((r) =>
        encodePushReply({ version: r.version, staleness: 0, applied: 0, duplicate: true }),
      );
    }
    core.validatePush(req);
    return sync.join(req).then((r) => encodePushReply({ ...r, duplicate: false }));
  }

  /**
   * Applies a closed step as one push (combineStep: one optimizer step on the examples of all of
   * them) and logs it as that one record before any of its pushes is answered: a replay applies
   * the same push, and each part's id is remembered as applied, here and after a replay.
   */
  private applyStep(reqs: PushRequest[]): Promise<StepReply[]> {
    const core = this.core;
    const before = core.version;
    const step = combineStep(reqs);
    let tau = 0;
    for (const r of reqs) tau = Math.max(tau, core.tauOf(r.base));
    const ts = Date.now();
    const t0 = performance.now();
    // applied as logged: each part passed validatePush, and the sum may exceed maxPushRows
    const res = core.applyPush(step, ts, { tau, dcApplied: false });
    const t1 = performance.now();
    this.applyTimings.record(t1 - t0);
    const replies = reqs.map((r) => ({
      version: res.version,
      staleness: Math.max(0, before - r.base),
      applied: res.applied,
    }));
    if (!this.wal) return Promise.resolve(replies);
    const durable = this.wal.append({ kind: 'push', ts, tau, dcApplied: false, payload: encodePush(step) });
    for (const r of reqs) this.inflightIds.set(r.id, durable);
    const forget = () => {
      for (const r of reqs) this.inflightIds.delete(r.id);
    };
    return durable.then(
      () => {
        forget();
        this.walTimings.record(performance.now() - t1);
        return replies;
      },
      (e: unknown) => {
        forget();
        this.fail(e);
        throw e;
      },
    );
  }

  private async registerService(nc: NatsConnection, spec: ModelSpec): Promise<void> {
    const o = this.options;
    const s = subjects(o.cluster);
    this.service = await nc.services.add({
      name: s.serviceName('shard'),
      version: '0.1.0',
      description: `Freshet parameter-server shard ${o.shard}/${o.shards} of ${o.cluster}`,
      metadata: {
        cluster: o.cluster,
        role: 'shard',
        shard: String(o.shard),
        shards: String(o.shards),
        model: spec.name,
      },
      statsHandler: () => Promise.resolve(this.status()),
    });
    this.service.addEndpoint('status', {
      subject: shardStatusSubject(o.cluster, o.shard),
      handler: (err, msg) => {
        if (!err) msg.respond(JSON.stringify(this.status()));
      },
      metadata: { shard: String(o.shard) },
    });
  }

  private maintain(): void {
    if (this.life.state !== 'running') return;
    const core = this.core;
    const now = Date.now();
    const dt = (now - this.rate.at) / 1000;
    if (dt > 0) {
      this.rate.updatesPerS = (core.rowUpdates - this.rate.updates) / dt;
      this.rate.pushesPerS = (core.pushes - this.rate.pushes) / dt;
      this.rate = { ...this.rate, at: now, updates: core.rowUpdates, pushes: core.pushes };
    }
    this.sessions?.sweep(now);
    for (const { t, keys } of core.expired(now, this.options.limits.evictScanRows)) {
      // Log first, in order with the pushes around it, then remove: a replay evicts the same rows.
      void this.wal?.append({ kind: 'evict', ts: now, t, keys }).catch((e: unknown) => this.fail(e));
      core.evict(t, keys);
    }
    const o = this.options;
    if (
      this.wal &&
      !this.checkpointing &&
      ((o.checkpointIntervalMs > 0 && now - this.lastCheckpointAt >= o.checkpointIntervalMs) ||
        this.wal.stats.segmentBytes + this.sealedSinceCheckpoint >= o.checkpointWalBytes)
    ) {
      this.checkpointing = this.checkpoint()
        .catch((e: unknown) => this.log('error', 'checkpoint failed', { error: (e as Error).message }))
        .finally(() => (this.checkpointing = undefined));
    } else if (
      this.wal &&
      this.uploader &&
      !this.checkpointing &&
      o.checkpoint.walSegmentMs > 0 &&
      now - this.lastSealAt >= o.checkpoint.walSegmentMs &&
      this.wal.stats.segmentBytes > 0
    ) {
      this.sealSegment(this.wal, this.uploader);
    }
  }

  /**
   * Seals the current log segment (a rotation without a checkpoint) and mirrors it to the
   * Object Store once it is closed: a shard restored elsewhere after a crash replays it. Every
   * push in it was applied before the rotation, so the version now is the one at its end.
   */
  private sealSegment(wal: Wal, uploader: CheckpointUploader): void {
    this.lastSealAt = Date.now();
    this.sealedSinceCheckpoint += wal.stats.segmentBytes;
    const version = this.core.version;
    const { sealed, done } = wal.rotate();
    void done.then(() => uploader.sealed(sealed, version));
  }

  /**
   * Takes a checkpoint now: rotates the log, snapshots the state copy-on-write (no pause),
   * copies and writes it in the background, then deletes the log segments it covers.
   */
  /**
   * Removes one user's rows (`freshet user forget`, docs/privacy.md) through the expiry path:
   * the eviction is logged first (a WAL replay or a restore evicts them again), then the rows go
   * and their tombstones leave with the next delta, so serving drops them too. Resolves once the
   * log record is durable; returns the rows removed per table.
   */
  async forgetUser(user: string, fields: readonly string[] = ['user']): Promise<Record<string, number>> {
    this.guard();
    const core = this.core;
    const removed: Record<string, number> = {};
    const logged: Promise<void>[] = [];
    for (const { t, name, keys } of forgetPlan(core, user, fields)) {
      if (this.wal) logged.push(this.wal.append({ kind: 'evict', ts: Date.now(), t, keys }));
      removed[name] = core.evict(t, keys);
    }
    await Promise.all(logged).catch((e: unknown) => {
      this.fail(e);
      throw e;
    });
    return removed;
  }

  async checkpoint(): Promise<void> {
    const wal = this.wal;
    const dir = this.options.dataDir;
    if (!wal || !dir) throw new FreshetError('CONFIG', 'checkpoint needs a dataDir');
    const t0 = performance.now();
    const { sealed, done } = wal.rotate();
    const pending = beginCheckpoint(this.core, sealed, this.deltas?.seq ?? 0);
    const pauseMs = performance.now() - t0;
    this.lastCheckpointAt = this.lastSealAt = Date.now();
    this.sealedSinceCheckpoint = 0;
    const cap = await pending.complete();
    await done;
    const bytes = await writeCheckpoint(dir, cap, this.options.fsync);
    await truncateWal(dir, sealed);
    // background: a slow or failed upload never holds pushes (a failure is retried next time)
    this.uploader?.schedule();
    this.lastCheckpoint = {
      at: Date.now(),
      ms: Math.round(performance.now() - t0),
      bytes,
      segment: sealed,
      pauseMs: +pauseMs.toFixed(2),
    };
  }

  /**
   * Reloads the state from disk while the process keeps running (`freshet restore`): stops
   * taking requests (in-flight ones are answered), publishes the last delta, closes the log,
   * rebuilds the state from the newest checkpoint plus the log after it, and serves again with
   * the delta sequence continued. Requests meanwhile find no responder or NOT_READY (both
   * retryable). Every accepted push is logged before it is acknowledged, so the reloaded state
   * equals the acknowledged one; this is how an operator proves a checkpoint restores, or picks
   * up a checkpoint placed in the data dir.
   *
   * `checkpoint` names the checkpoint to load (`checkpoint-<segment>`, its file name, or the
   * segment number); only the newest exists (older ones are deleted once a newer one is
   * written, and the log before it is truncated), so any other name is a CONFIG error.
   *
   * `object-store:<object name>` (`freshet model rollback`, docs/model-versions.md) loads an
   * older checkpoint of this shard from the Object Store instead: see {@link rollBack}.
   */
  reload(checkpoint?: string): Promise<RestoreInfo & { versionBefore: number }> {
    if (this.reloading) return Promise.reject(new FreshetError('OVERLOADED', 'a restore is in progress'));
    this.reloading = this.doReload(checkpoint).finally(() => (this.reloading = undefined));
    return this.reloading;
  }

  private async doReload(checkpoint?: string): Promise<RestoreInfo & { versionBefore: number }> {
    if (checkpoint?.startsWith(OBJECT_STORE_PREFIX)) {
      return this.rollBack(checkpoint.slice(OBJECT_STORE_PREFIX.length));
    }
    const o = this.options;
    const dir = o.dataDir;
    if (!dir || !this.wal) {
      throw new FreshetError(
        'CONFIG',
        'restore needs a shard with a dataDir (this one keeps no checkpoints)',
      );
    }
    const nc = this.nc;
    const spec = this.spec;
    const wal = this.wal;
    if (this.life.state !== 'running' || !nc || !spec) {
      throw new FreshetError('NOT_READY', `shard ${this.life.state}: restore needs a running shard`);
    }
    if (checkpoint !== undefined) {
      const m = /^(?:.*\/)?(?:checkpoint-)?(\d+)(?:\.ckpt)?$/.exec(checkpoint.trim());
      const latest = this.lastCheckpoint?.segment;
      if (!m || latest === undefined || Number(m[1]) !== latest) {
        throw new FreshetError(
          'CONFIG',
          `no checkpoint "${checkpoint}" on shard ${o.shard}: ` +
            (latest === undefined
              ? 'it has none yet (take one with `freshet checkpoint`)'
              : `only the newest is kept, checkpoint-${latest}`),
        );
      }
    }
    const versionBefore = this.core.version;
    await this.life.restart(async () => {
      if (this.maint) clearInterval(this.maint);
      await Promise.allSettled(this.endpoints.splice(0).map((e) => e.drain()));
      await this.checkpointing;
      await this.deltas?.stop();
      await wal.close();
      this.wal = undefined;
      this._core = this.newCore(spec);
      const deltaSeq = await this.restoreFromDisk(dir);
      this.wal = await Wal.open(dir, o.fsync, this.restore?.checkpointSegment ?? 0);
      this.rate = {
        at: Date.now(),
        updates: this.core.rowUpdates,
        pushes: this.core.pushes,
        updatesPerS: 0,
        pushesPerS: 0,
      };
      this.serve(nc, deltaSeq);
      await nc.flush();
      this.maint = setInterval(() => this.maintain(), o.maintenanceIntervalMs);
    });
    this.log('info', 'restored', { versionBefore, version: this.core.version });
    return { ...this.restore!, versionBefore };
  }

  /**
   * Rolls the state back to an older checkpoint of this shard in the Object Store (object
   * `name`, e.g. one a model tag holds), while the process runs. The object is fetched and
   * verified first (the shard keeps serving meanwhile); then, as in a restore, requests stop,
   * the last delta goes out and the log closes. The old state becomes a new checkpoint at a
   * segment after every one written so far, and the log before it is dropped: what was learned
   * after the old checkpoint is gone from this shard (a crash or a move restores the rolled-back
   * state, and the store's newest checkpoint is the rolled-back one once uploaded), and later
   * checkpoints never reuse the name of an older one a tag may hold.
   *
   * The delta sequence goes on forward with one number skipped, and an empty delta at the next
   * one is published at once: every serving node sees a gap and pulls a fresh snapshot, so no
   * row learned after the old checkpoint stays in serving, even when nothing is trained after.
   */
  private async rollBack(name: string): Promise<RestoreInfo & { versionBefore: number }> {
    const o = this.options;
    const dir = o.dataDir;
    const nc = this.nc;
    const spec = this.spec;
    const wal = this.wal;
    if (!dir || !wal || o.checkpoint.store !== 'object-store') {
      throw new FreshetError(
        'CONFIG',
        `shard ${o.shard} cannot load ${name}: a rollback needs a dataDir and checkpoint.store 'object-store'`,
      );
    }
    if (this.life.state !== 'running' || !nc || !spec) {
      throw new FreshetError('NOT_READY', `shard ${this.life.state}: a rollback needs a running shard`);
    }
    const store = await this.objectStore(nc, spec);
    const t0 = performance.now();
    const listed = (await store.list()).find((c) => c.name === name);
    if (!listed) {
      throw new FreshetError(
        'CONFIG',
        `no checkpoint object ${name} of shard ${o.shard} in the Object Store`,
      );
    }
    if (listed.problem) throw new FreshetError('BAD_FRAME', `checkpoint ${name}: ${listed.problem}`);
    const bytes = await store.read(listed);
    const fetchMs = Math.round(performance.now() - t0);
    const versionBefore = this.core.version;
    await this.life.restart(async () => {
      if (this.maint) clearInterval(this.maint);
      await Promise.allSettled(this.endpoints.splice(0).map((e) => e.drain()));
      await this.checkpointing;
      await this.deltas?.stop();
      const seqBefore = this.deltas?.seq ?? 0;
      const segment = Math.max(wal.stats.segment, ...listSegments(dir), ...listCheckpoints(dir)) + 1;
      await wal.close();
      this.wal = undefined;
      // the old checkpoint is loaded from a scratch dir and written again as the newest one
      const scratch = await mkdtemp(join(dir, 'rollback-'));
      try {
        await installCheckpoint(scratch, listed.segment, bytes, false);
        const old = this.newCore(spec);
        await loadCheckpoint(scratch, old);
        const cap = await beginCheckpoint(old, segment, seqBefore + 1).complete();
        await writeCheckpoint(dir, cap, o.fsync);
      } finally {
        await rm(scratch, { recursive: true, force: true });
      }
      await truncateWal(dir, segment);
      this._core = this.newCore(spec);
      const deltaSeq = (await this.restoreFromDisk(dir)) + 1;
      this.restore = { ...this.restore!, checkpointSource: 'object-store', fetchMs };
      this.wal = await Wal.open(dir, o.fsync, segment);
      // logged like every delta's seq: a restart continues after it
      await this.wal.append({ kind: 'seq', ts: Date.now(), seq: deltaSeq });
      this.rate = {
        at: Date.now(),
        updates: this.core.rowUpdates,
        pushes: this.core.pushes,
        updatesPerS: 0,
        pushesPerS: 0,
      };
      this.serve(nc, deltaSeq);
      nc.publish(
        subjects(o.cluster).delta(o.shard),
        encodeDelta({
          shard: o.shard,
          seq: deltaSeq,
          version: this.core.version,
          ts: Date.now(),
          eventTs: [],
          tables: [],
        }),
      );
      await nc.flush();
      this.maint = setInterval(() => this.maintain(), o.maintenanceIntervalMs);
    });
    this.uploader?.schedule();
    this.log('info', 'rolled back', { object: name, versionBefore, version: this.core.version });
    return { ...this.restore!, versionBefore };
  }

  /** Status for the service API, the status subject and `freshet status`. */
  status(): ShardStatus {
    const o = this.options;
    const core = this._core;
    const rejects: Record<string, number> = {};
    for (const [k, v] of core?.rejects ?? new Map<ErrorCode, number>()) rejects[k] = v;
    return {
      cluster: o.cluster,
      shard: o.shard,
      shards: o.shards,
      state: this.life.state,
      model: core?.o.spec.name ?? '',
      rows: core?.rows ?? 0,
      bytes: core?.bytes ?? 0,
      version: core?.version ?? 0,
      updatesPerS: Math.round(this.rate.updatesPerS),
      pushesPerS: +this.rate.pushesPerS.toFixed(1),
      staleness: {
        p50: core?.tau.quantile(0.5) ?? 0,
        p99: core?.tau.quantile(0.99) ?? 0,
        max: core?.tau.max ?? 0,
        count: core?.tau.count ?? 0,
        ...(core ? { histogram: core.tau.buckets() } : {}),
      },
      rejects,
      evictions: core?.evictions ?? 0,
      timings: {
        applyMs: this.applyTimings.summary(),
        walMs: this.walTimings.summary(),
        deltaMs: this.deltas?.timings.summary() ?? new RecentTimings(1).summary(),
      },
      duplicates: core?.duplicates ?? 0,
      deltaSeq: this.deltas?.seq ?? 0,
      lastCheckpoint: this.lastCheckpoint,
      wal: this.wal
        ? {
            segment: this.wal.stats.segment,
            records: this.wal.stats.records,
            groupCommits: this.wal.stats.groupCommits,
            bytes: this.wal.stats.bytes,
          }
        : null,
      ...(this.sync
        ? {
            sync: {
              steps: this.sync.steps,
              pushes: this.sync.pushes,
              timeouts: this.sync.timeouts,
              members: this.sync.memberCount,
            },
          }
        : {}),
      ...(this.ssp
        ? {
            ssp: {
              waiting: this.ssp.waiting,
              waits: this.ssp.waits,
              timeouts: this.ssp.timeouts,
              joins: this.ssp.joins,
            },
          }
        : {}),
      ...(this.sessions?.enabled ? { pullSessions: this.sessions.stats() } : {}),
      tables: (core?.tables ?? []).map((t) => ({
        t: t.id,
        name: t.spec.name,
        rows: t.store.size,
        bytes: t.bytes,
      })),
    };
  }

  /** A failure while serving (the log cannot be written): requests are refused from now on. */
  private fail(e: unknown): void {
    if (this.life.state === 'running') this.life.to('failed', { error: (e as Error)?.message ?? String(e) });
  }

  /**
   * Stops taking requests, answers the in-flight ones, publishes the last delta, writes a final
   * checkpoint (fast restart) and closes. Every caller gets the same promise; a restore in
   * progress finishes first (it holds the log and the endpoints).
   */
  stop(): Promise<void> {
    return this.life.stop();
  }

  private async doStop(from: 'running' | 'failed'): Promise<void> {
    if (this.maint) clearInterval(this.maint);
    this.clockSub?.unsubscribe();
    this.ssp?.close();
    await Promise.allSettled(this.endpoints.map((e) => e.drain()));
    this.sync?.stop();
    await this.checkpointing;
    await this.deltas?.stop().catch(() => undefined);
    let complete = from === 'running' && this.wal !== undefined && this.uploader !== undefined;
    if (from === 'running' && this.wal) {
      await this.checkpoint().then(
        () => (this._finalCheckpoint = true),
        (e: unknown) => {
          complete = false;
          this.log('error', 'final checkpoint failed', { error: (e as Error).message });
        },
      );
    }
    // a drained shard restarts anywhere from the Object Store with nothing left in its log
    await this.uploader?.flush().catch((e: unknown) => {
      complete = false;
      this.log(
        'error',
        'final checkpoint upload failed: a restart elsewhere loses what came after the last upload',
        {
          code: e instanceof FreshetError ? e.code : 'UNAVAILABLE',
          error: (e as Error).message,
        },
      );
    });
    this._handedOff = complete;
    await this.release();
  }

  private async release(): Promise<void> {
    if (this.maint) clearInterval(this.maint);
    await this.service?.stop().catch(() => undefined);
    await this.wal?.close().catch(() => undefined);
    if (this.ownsNc) await this.nc?.drain().catch(() => undefined);
  }
}

/** Creates and starts a shard. */
export async function startShard(input: ShardOptionsInput, deps: ShardDeps = {}): Promise<Shard> {
  const s = new Shard(input, deps);
  await s.start();
  return s;
}
