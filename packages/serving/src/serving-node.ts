import { randomInt } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import Fastify, { type FastifyInstance, type FastifyError } from 'fastify';
import type { NatsConnection, NatsError, Service, ServiceMsg } from 'nats';
import type { z } from 'zod';
import { createModel, type Model, type ModelConfigInput } from '@freshet/model';
import {
  connectNats,
  Lifecycle,
  type ActorLog,
  type ActorState,
  type Endpoint,
  type ProcessActor,
} from '@freshet/nats';
import {
  FreshetError,
  subjects,
  toErrorEnvelope,
  type ErrorEnvelope,
  type Subjects,
  xorshift32,
} from '@freshet/protocol';
import {
  apiSchemas,
  fastRequestCheck,
  rankResponseSchema,
  scoreResponseSchema,
  type RankRequest,
  type RankResponse,
  type ScoreResponse,
} from './api-schemas.js';
import type { EncoderStatsView } from './encoder-stats-follower.js';
import { exploreRanking, type Exploration } from './exploration.js';
import { WindowedHistogram } from './histogram.js';
import { RateMeter } from './rate-meter.js';
import { ModelFollower, type ModelFollowerOptions } from './model-follower.js';
import type { ModelPin } from './model-pin.js';
import type { Replica, ReplicaEvent, ReplicaStats } from './replica.js';
import type { Scorer, ScorerKind } from './scorer.js';
import { compileServingOptions, type ServingOptions, type ServingOptionsInput } from './serving-options.js';
import { serveSliceRows } from './slice-server.js';
import { SlicedRows, type GatheredRows } from './sliced-rows.js';
import { pickCanary } from './user-split.js';
import { Variant, type VariantStatus } from './variants.js';

/** Actor states of a serving node: the actor contract's (docs/architecture.md). */
export type ServingState = ActorState;

/** Structured log lines (the actors' one logger type); entry points print them, tests may collect them. */
export type ServingLog = ActorLog;

export interface ServingNodeDeps {
  /** An existing connection (not closed by the node); otherwise the node connects with `options.nats`. */
  nc?: NatsConnection;
  signal?: AbortSignal;
  log?: ServingLog;
}

/** What `GET /v1/status` and the NATS service STATS (`data`) report. */
export interface ServingStatus {
  id: string;
  cluster: string;
  state: ServingState;
  ready: boolean;
  model: string;
  scorer: ScorerKind | null;
  version: number;
  versions: number[];
  /** Event publication → update in this node's weights (ms), over the recent window. */
  freshness: { p50Ms: number; p99Ms: number; count: number };
  freshestAgeMs: number | null;
  requestsPerSec: number;
  /** Server-side handling time of score/rank requests (ms), over the recent window. */
  latency: { p50Ms: number; p99Ms: number; count: number };
  requests: { ok: number; badRequest: number; notReady: number; failed: number };
  /** Rank requests answered with exploration, and their slots that explored. */
  exploration: { rankings: number; explored: number };
  http: string | null;
  replica: ReplicaStats;
  /** Workers' statistics of standardised columns in use (null: the model has none). */
  encoderStats: EncoderStatsView | null;
  /** Set while the model is pinned (docs/model-versions.md): why, and since when. */
  pinned: ModelPin | null;
  /** Requests answered (200) by each model, by cluster: the live one and any canary. */
  servedBy: Record<string, number>;
  /** The other models this node follows (docs/multi-model.md). */
  variants: VariantStatus[];
  /**
   * Sliced serving (option `slice`; null: the node holds the whole model): its slice, the rows
   * requests it sent to other slices, the score/rank requests that failed for want of a slice's
   * rows, and the other slices' requests it is answering now.
   */
  slice: {
    index: number;
    count: number;
    /** Rows requests sent to other slices, and the rankings' asks they carried (per turn, coalesced). */
    requests: number;
    batches: number;
    failed: number;
    /** Rows requests asked again after the node that got them could not answer (busy, loading). */
    retried: number;
    answering: number;
  } | null;
}

interface Outcome {
  status: number;
  body: ScoreResponse | RankResponse | { error: ErrorEnvelope };
}

const te = new TextEncoder();
const td = new TextDecoder();
const SERVICE_VERSION = '0.1.0';

/**
 * A serving node: a {@link Replica} of the model's tables kept fresh from the shards' deltas,
 * answering score and rank requests over HTTP (fastify) and over NATS request-reply in the
 * serving queue group (so N nodes share the load), registered with the NATS service API.
 * Bad requests get a 400 with a reason and never disturb the node.
 */
export class ServingNode implements ProcessActor {
  readonly role = 'serving';
  readonly options: ServingOptions;
  private readonly deps: ServingNodeDeps;
  private readonly subj: Subjects;
  private readonly schemas: ReturnType<typeof apiSchemas>;
  private readonly quickCheck: ReturnType<typeof fastRequestCheck>;
  private readonly log: ServingLog;
  private readonly life: Lifecycle;
  private nc: NatsConnection | undefined;
  private ownsNc = false;
  private model: Model | undefined;
  private rep: Replica | undefined;
  private scorer: Scorer | undefined;
  /** The live model: replica, scorer, encoder statistics, pin. */
  private followed: ModelFollower | undefined;
  private app: FastifyInstance | undefined;
  private service: Service | undefined;
  private url: string | null = null;
  private readonly rate = new RateMeter(10);
  private readonly latency: WindowedHistogram;
  private readonly counters = { ok: 0, badRequest: 0, notReady: 0, failed: 0 };
  /** Sliced serving: the other slices' rows of each request, and this slice's for theirs. */
  private sliced: SlicedRows | undefined;
  private sliceEndpoint: Endpoint | undefined;
  /** Resolves once this node answers its slice's rows requests (it joins when caught up). */
  private sliceReady: Promise<void> | undefined;
  private sliceServing = false;
  /** Score/rank requests that failed for want of a slice's rows. */
  private sliceFailed = 0;
  /** Explored rank requests, and their slots that did not show the best remaining candidate. */
  private readonly exploration = { rankings: 0, explored: 0 };
  // seeded once per node: exploration draws need no cryptographic quality, only independence
  private readonly random = xorshift32(randomInt(1, 2 ** 32));
  private readonly lifetime = new AbortController();
  private variants: Variant[] = [];
  private canaries: Variant[] = [];
  private canaryFractions: number[] = [];
  private shadows: Variant[] = [];
  private readonly servedBy: Record<string, number> = {};

  constructor(input: ServingOptionsInput | ServingOptions, deps: ServingNodeDeps = {}) {
    this.options = compileServingOptions(input);
    this.deps = deps;
    this.subj = subjects(this.options.cluster);
    this.schemas = apiSchemas(this.options.limits);
    this.quickCheck = fastRequestCheck(this.options.limits);
    this.latency = new WindowedHistogram(this.options.statsWindowMs);
    this.log = deps.log ?? (() => undefined);
    this.life = new Lifecycle(
      { start: () => this.doStart(), stop: () => this.teardown() },
      { name: this.options.id, log: this.log, signal: deps.signal },
    );
  }

  get state(): ServingState {
    return this.life.state;
  }
  get id(): string {
    return this.options.id;
  }
  get cluster(): string {
    return this.options.cluster;
  }
  /** The ready line's serving fields: where it answers HTTP. */
  readyFields(): Record<string, unknown> {
    return { http: this.url };
  }
  /** `http://host:port` once listening; null when HTTP is disabled or not started. */
  get httpUrl(): string | null {
    return this.url;
  }
  get replica(): Replica {
    if (!this.rep) throw new FreshetError('NOT_READY', 'serving node not started');
    return this.rep;
  }
  get ready(): boolean {
    return this.life.state === 'running' && !!this.rep?.ready && (!this.options.slice || this.sliceServing);
  }

  /**
   * Connects, subscribes to deltas, starts syncing, listens on HTTP and NATS. Resolves once it
   * listens (answering NOT_READY until the replica has caught up: see {@link whenReady}).
   */
  start(): Promise<void> {
    return this.life.start();
  }

  private async doStart(): Promise<void> {
    const o = this.options;
    try {
      this.model = createModel(o.model as ModelConfigInput);
      if (this.deps.nc) this.nc = this.deps.nc;
      else {
        this.nc = await connectNats(o.nats, `freshet-serving-${o.id}`, {
          inboxPrefix: subjects(o.cluster).inboxPrefix('serving'),
        });
        this.ownsNc = true;
      }
      this.followed = await ModelFollower.start(this.nc, {
        cluster: o.cluster,
        shards: o.shards,
        slice: o.slice
          ? { index: o.slice.index, count: o.slice.count, denseRefreshMs: o.slice.denseRefreshMs }
          : undefined,
        model: this.model,
        replica: this.replicaSettings(),
        statsWindowMs: o.statsWindowMs,
        encoderStatsMaxAgeMs: o.encoderStatsMaxAgeMs,
        scorer: o.scorer,
        fields: o.fields,
        gemm: o.gemm,
        signal: this.lifetime.signal,
        log: this.log,
        onEvent: (e) => this.onReplicaEvent(e),
      });
      this.rep = this.followed.rep;
      this.scorer = this.followed.scorer;
      if (o.slice) {
        // (no lifetime signal: a rank in flight when the node drains still gets its rows)
        this.sliced = new SlicedRows(this.nc, this.rep, { cluster: o.cluster, timeoutMs: o.slice.timeoutMs });
        // Joins its slice's queue group once caught up: before, it would answer NOT_READY to
        // requests that a caught-up holder of the slice could answer (a restart under load).
        const rep = this.rep;
        const nc = this.nc;
        this.sliceReady = rep.whenReady(this.lifetime.signal).then(async () => {
          if (this.lifetime.signal.aborted) return;
          this.sliceEndpoint = serveSliceRows(nc, rep, {
            cluster: o.cluster,
            node: o.id,
            onError: (e) => this.log('warn', 'slice rows request failed', { error: e.message }),
          });
          // the server has the subscription before the node says it is ready
          await nc.flush();
          this.sliceServing = true;
        });
        this.sliceReady.catch(() => undefined); // stopped first: whenReady rejects for it
      }
      await this.startVariants();
      if (o.http.enabled) await this.startHttp();
      await this.startService();
      this.log('info', 'serving node listening', { id: o.id, http: this.url, scorer: this.scorer.kind });
    } catch (e) {
      await this.teardown();
      throw e;
    }
  }

  /** Resolves once the replica has caught up with every shard. */
  async whenReady(signal?: AbortSignal): Promise<void> {
    await this.replica.whenReady(signal);
    await this.sliceReady;
  }

  /**
   * Stops taking requests (NATS first, then HTTP), finishes in-flight ones, closes. Every caller
   * gets the same promise.
   */
  stop(): Promise<void> {
    return this.life.stop();
  }

  private async teardown(): Promise<void> {
    this.lifetime.abort();
    await this.service?.stop().catch(() => undefined);
    await this.app?.close().catch(() => undefined);
    // other slices' nodes may still be scoring with this slice's rows: answer them, then go
    await this.sliceEndpoint?.drain().catch(() => undefined);
    for (const v of this.variants) await v.stop();
    await this.followed?.stop();
    if (this.ownsNc && this.nc && !this.nc.isClosed()) await this.nc.drain().catch(() => undefined);
  }

  status(): ServingStatus {
    const r = this.rep?.stats();
    const lat = this.latency.recent();
    return {
      id: this.options.id,
      cluster: this.options.cluster,
      state: this.life.state,
      ready: this.ready,
      model: this.model?.spec.name ?? '',
      scorer: this.scorer?.kind ?? null,
      version: r?.version ?? 0,
      versions: r?.versions ?? [],
      freshness: {
        p50Ms: r?.freshness.p50 ?? 0,
        p99Ms: r?.freshness.p99 ?? 0,
        count: r?.freshness.count ?? 0,
      },
      freshestAgeMs: r?.freshestAgeMs ?? null,
      requestsPerSec: this.rate.perSecond(),
      latency: { p50Ms: lat.p50, p99Ms: lat.p99, count: lat.count },
      requests: { ...this.counters },
      exploration: { ...this.exploration },
      http: this.url,
      replica: r ?? emptyReplicaStats(),
      encoderStats: this.followed?.encoderStats ? { ...this.followed.encoderStats.view } : null,
      pinned: this.followed?.pin.current ?? null,
      servedBy: { ...this.servedBy },
      variants: this.variants.map((v) => v.status()),
      slice: this.options.slice
        ? {
            index: this.options.slice.index,
            count: this.options.slice.count,
            requests: this.sliced?.sent.requests ?? 0,
            batches: this.sliced?.sent.batches ?? 0,
            failed: this.sliceFailed,
            retried: this.sliced?.retries ?? 0,
            answering: this.sliceEndpoint?.inFlight ?? 0,
          }
        : null,
    };
  }

  /** Prometheus text exposition of the node's metrics (`GET /metrics`). */
  metrics(): string {
    const s = this.status();
    // The labels every Freshet exporter uses (see @freshet/cli metrics), so one query spans them.
    const labels = `cluster="${this.options.cluster}",role="serving",id="${this.options.id}"`;
    const gauge = (name: string, help: string, v: number) =>
      `# HELP ${name} ${help}\n# TYPE ${name} gauge\n${name}{${labels}} ${v}\n`;
    const counter = (name: string, help: string, parts: [string, number][]) =>
      `# HELP ${name} ${help}\n# TYPE ${name} counter\n` +
      parts.map(([k, v]) => `${name}{${labels},outcome="${k}"} ${v}\n`).join('');
    return (
      gauge('freshet_serving_ready', '1 once the replica has caught up', s.ready ? 1 : 0) +
      gauge('freshet_serving_model_version', 'sum of the shard versions applied', s.version) +
      gauge('freshet_serving_rows', 'rows held by the replica', s.replica.rows) +
      gauge(
        'freshet_serving_freshest_age_milliseconds',
        'age of the newest update held',
        s.freshestAgeMs ?? -1,
      ) +
      counter('freshet_serving_requests_total', 'score and rank requests', Object.entries(s.requests)) +
      gauge('freshet_serving_resyncs', 'shard resyncs since start', s.replica.resyncs) +
      gauge(
        'freshet_serving_pinned',
        '1 while the model is pinned (docs/model-versions.md)',
        s.pinned ? 1 : 0,
      ) +
      gauge(
        'freshet_serving_pinned_since_seconds',
        'when the pin began (unix seconds; 0 when not pinned)',
        s.pinned ? Math.floor(s.pinned.since / 1000) : 0,
      ) +
      gauge('freshet_serving_deltas_held', 'deltas left unapplied while pinned', s.replica.deltasHeld) +
      `# HELP freshet_serving_delta_received_total delta messages and bytes delivered to this node\n` +
      `# TYPE freshet_serving_delta_received_total counter\n` +
      `freshet_serving_delta_received_total{${labels},unit="messages"} ${s.replica.deltaMessages}\n` +
      `freshet_serving_delta_received_total{${labels},unit="bytes"} ${s.replica.deltaBytes}\n` +
      (s.slice
        ? counter(
            'freshet_serving_slice_requests_total',
            "rows requests to other slices, and score/rank requests failed for want of a slice's rows",
            [
              ['sent', s.slice.requests],
              ['failed', s.slice.failed],
            ],
          )
        : '') +
      `# HELP freshet_serving_served_total requests answered, by the cluster whose model served them\n` +
      `# TYPE freshet_serving_served_total counter\n` +
      Object.entries(s.servedBy)
        .map(([m, v]) => `freshet_serving_served_total{${labels},model="${m}"} ${v}\n`)
        .join('') +
      this.rep!.freshness.cumulative.prometheus(
        'freshet_serving_freshness_milliseconds',
        'event publication to update applied on this node',
        labels,
      ) +
      this.latency.cumulative.prometheus(
        'freshet_serving_request_milliseconds',
        'score/rank handling time',
        labels,
      )
    );
  }

  // ------------------------------------------------------------------ request handling

  /** Validates, scores and answers one request; never throws (nor rejects, when sliced). */
  private handle(op: 'score' | 'rank', raw: unknown): Outcome | Promise<Outcome> {
    const t0 = performance.now();
    const out = this.handleInner(op, raw);
    return out instanceof Promise ? out.then((o) => this.counted(o, t0)) : this.counted(out, t0);
  }

  private counted(out: Outcome, t0: number): Outcome {
    if (out.status === 200) {
      this.counters.ok++;
      this.latency.record(performance.now() - t0);
    } else if (out.status === 400) this.counters.badRequest++;
    else if (out.status === 503) this.counters.notReady++;
    else this.counters.failed++;
    this.rate.mark();
    return out;
  }

  private handleInner(op: 'score' | 'rank', raw: unknown): Outcome | Promise<Outcome> {
    const state = this.life.state;
    if (state !== 'running') return fail(503, new FreshetError('SHUTTING_DOWN', `serving node ${state}`));
    if (!this.rep?.ready || !this.scorer)
      return fail(503, new FreshetError('NOT_READY', 'replica still loading the snapshot'));
    let req: RankRequest;
    // The hand check accepts only what zod accepts; zod decides (and words) everything else.
    if (this.quickCheck(raw, op)) req = raw as RankRequest;
    else {
      const parsed = (op === 'rank' ? this.schemas.rank : this.schemas.score).safeParse(raw);
      if (!parsed.success) return fail(400, new FreshetError('BAD_REQUEST', zodReason(parsed.error)));
      req = parsed.data as RankRequest;
    }
    if (this.sliced) return this.scoreSliced(op, req, this.sliced, this.scorer);
    let scores: Float32Array;
    // a canary's users are answered by it, the rest (and its users while it loads) by the live model
    let by: Variant | undefined;
    if (this.canaries.length > 0) {
      const c = this.canaries[pickCanary(req.user, this.options.cluster, this.canaryFractions)];
      if (c?.ready) by = c;
      else c?.fellBack();
    }
    try {
      scores = by
        ? by.score(req.user, req.context, req.candidates)
        : this.scorer.score(req.user, req.context, req.candidates);
    } catch (e) {
      const err = e instanceof FreshetError ? e : new FreshetError('INTERNAL', String(e));
      return fail(err.code === 'BAD_REQUEST' ? 400 : 500, err);
    }
    for (const v of this.shadows) v.shadow(req.user, req.context, req.candidates, scores);
    const rep = by ? by.rep! : this.rep;
    return this.answer(op, req, scores, by, {
      version: rep.version(),
      versions: rep.versions(),
      freshestAgeMs: rep.freshestAgeMs(),
    });
  }

  /**
   * A sliced node's request: encoded here, the other slices' rows asked of them (all at once),
   * then scored here. A slice that does not answer fails the request with a retryable 503.
   */
  private async scoreSliced(
    op: 'score' | 'rank',
    req: RankRequest,
    sliced: SlicedRows,
    scorer: Scorer,
  ): Promise<Outcome> {
    let scores: Float32Array;
    let g: GatheredRows;
    try {
      const batch = scorer.encode(req.user, req.context, req.candidates);
      g = await sliced.gather(batch);
      scores = scorer.predict(batch, g.params);
    } catch (e) {
      const err = e instanceof FreshetError ? e : new FreshetError('INTERNAL', String(e));
      if (err.code === 'BAD_REQUEST') return fail(400, err);
      this.sliceFailed++;
      const unavailable = ['UNAVAILABLE', 'TIMEOUT', 'NOT_READY', 'OVERLOADED', 'SHUTTING_DOWN'];
      if (!unavailable.includes(err.code)) return fail(500, err);
      return fail(503, new FreshetError('UNAVAILABLE', `another slice's rows: ${err.message}`));
    }
    return this.answer(op, req, scores, undefined, {
      version: g.versions.reduce((a, v) => a + v, 0),
      versions: g.versions,
      freshestAgeMs: g.newestTs > 0 ? Math.max(0, Date.now() - g.newestTs) : null,
    });
  }

  /** The response to a scored request (`by`: the canary that scored it). */
  private answer(
    op: 'score' | 'rank',
    req: RankRequest,
    scores: Float32Array,
    by: Variant | undefined,
    at: { version: number; versions: number[]; freshestAgeMs: number | null },
  ): Outcome {
    for (let i = 0; i < scores.length; i++) {
      if (!Number.isFinite(scores[i]!))
        return fail(500, new FreshetError('INTERNAL', `non-finite score for candidate ${i}`));
    }
    const servedBy = by ? by.o.cluster : this.options.cluster;
    this.servedBy[servedBy] = (this.servedBy[servedBy] ?? 0) + 1;
    const meta = {
      model: (by ? by.model! : this.model!).spec.name,
      servedBy,
      ...at,
      node: this.options.id,
      ...(req.requestId !== undefined ? { requestId: req.requestId } : {}),
    };
    let body: ScoreResponse | RankResponse;
    if (op === 'score') body = { ...meta, scores: Array.from(scores) };
    else {
      const k = Math.min(req.k ?? this.options.limits.defaultK, scores.length);
      const explore = req.explore ?? this.options.exploration;
      if (explore.kind !== 'none') body = { ...meta, items: this.explored(req, scores, k, explore) };
      else {
        const order = Array.from({ length: scores.length }, (_, i) => i);
        order.sort((a, b) => scores[b]! - scores[a]! || a - b);
        body = {
          ...meta,
          items: order
            .slice(0, k)
            .map((i) => ({ item: req.candidates[i]!.item, score: scores[i]!, index: i })),
        };
      }
    }
    if (this.options.validateResponses && !responseLooksValid(body)) {
      // The cheap check failed: let the schema say what is wrong (and be the judge).
      const check = (op === 'score' ? scoreResponseSchema : rankResponseSchema).safeParse(body);
      if (!check.success)
        return fail(500, new FreshetError('INTERNAL', `invalid response: ${zodReason(check.error)}`));
    }
    return { status: 200, body };
  }

  /** Starts the variants' replicas (their snapshots load while the live model serves). */
  private async startVariants(): Promise<void> {
    const o = this.options;
    for (const vo of o.variants) {
      const v = new Variant(vo, {
        nc: this.nc!,
        replica: this.replicaSettings(),
        statsWindowMs: o.statsWindowMs,
        encoderStatsMaxAgeMs: o.encoderStatsMaxAgeMs,
        scorer: o.scorer,
        fields: o.fields,
        gemm: o.gemm,
        signal: this.lifetime.signal,
        log: this.log,
      });
      this.variants.push(v);
      await v.start();
      if (vo.mode === 'canary') {
        this.canaries.push(v);
        this.canaryFractions.push(vo.fraction);
      } else this.shadows.push(v);
    }
  }

  /** The replica options every model this node follows gets. */
  private replicaSettings(): ModelFollowerOptions['replica'] {
    const r = this.options.replica;
    return {
      emaDecay: r.emaDecay,
      pageSize: r.pageSize,
      snapshotTimeoutMs: r.snapshotTimeoutMs,
      maxBufferedDeltas: r.maxBufferedDeltas,
      applyStepMs: r.applyStepMs,
    };
  }

  /** An explored ranking's items, each with its propensity; counted in `exploration`. */
  private explored(req: RankRequest, scores: Float32Array, k: number, e: Exploration): RankResponse['items'] {
    const r = exploreRanking(scores, k, e, this.random);
    this.exploration.rankings++;
    return r.order.map((i, s) => {
      if (r.explored[s]) this.exploration.explored++;
      return {
        item: req.candidates[i]!.item,
        score: scores[i]!,
        index: i,
        propensity: r.propensity[s]!,
        explored: r.explored[s]!,
      };
    });
  }

  // ------------------------------------------------------------------ HTTP

  private async startHttp(): Promise<void> {
    const o = this.options;
    const app = Fastify({ bodyLimit: o.limits.maxBodyBytes, logger: false });
    this.app = app;
    app.setErrorHandler((err: FastifyError, _req, reply) => {
      // Client errors caught by fastify before our handler: body too large, bad JSON, wrong type.
      const status = err.statusCode ?? 500;
      if (status >= 400 && status < 500) {
        this.counters.badRequest++;
        const code = err.code === 'FST_ERR_CTP_BODY_TOO_LARGE' ? 'OVERSIZE' : 'BAD_REQUEST';
        const message =
          code === 'OVERSIZE'
            ? `request body over ${o.limits.maxBodyBytes} bytes`
            : err.message.slice(0, 512);
        return reply.code(400).send({ error: new FreshetError(code, message).toEnvelope() });
      }
      this.counters.failed++;
      this.log('error', 'http handler failed', { error: err.message });
      return reply.code(500).send({ error: toErrorEnvelope(err) });
    });
    app.setNotFoundHandler((req, reply) =>
      reply.code(404).send({
        error: new FreshetError('BAD_REQUEST', `no route ${req.method} ${req.url}`, {
          retryable: false,
        }).toEnvelope(),
      }),
    );
    const route =
      (op: 'score' | 'rank') =>
      async (req: { body: unknown }, reply: { code: (n: number) => { send: (b: unknown) => unknown } }) => {
        const r = await this.handle(op, req.body);
        return reply.code(r.status).send(r.body);
      };
    app.post('/v1/score', route('score'));
    app.post('/v1/rank', route('rank'));
    app.get('/healthz', (_req, reply) =>
      reply
        .code(this.life.state === 'running' || this.life.state === 'starting' ? 200 : 503)
        .send({ state: this.life.state }),
    );
    app.get('/readyz', (_req, reply) => {
      const s = this.status();
      return reply
        .code(s.ready ? 200 : 503)
        .send({ ready: s.ready, version: s.version, syncing: s.replica.syncing });
    });
    app.get('/v1/status', (_req, reply) => reply.send(this.status()));
    app.get('/metrics', (_req, reply) => reply.type('text/plain; version=0.0.4').send(this.metrics()));
    await app.listen({ host: o.http.host, port: o.http.port });
    const a = app.server.address();
    if (a && typeof a === 'object')
      this.url = `http://${a.family === 'IPv6' ? `[${a.address}]` : a.address}:${a.port}`;
  }

  // ------------------------------------------------------------------ NATS

  private async startService(): Promise<void> {
    const o = this.options;
    const svc = await this.nc!.services.add({
      name: this.subj.serviceName('serving'),
      version: SERVICE_VERSION,
      description: 'Freshet serving node: score and rank with fresh weights',
      metadata: { cluster: o.cluster, role: 'serving', id: o.id },
      queue: this.subj.servingQueue,
      statsHandler: () => Promise.resolve(this.status()),
    });
    this.service = svc;
    svc.addEndpoint('score', {
      subject: this.subj.score,
      handler: (err, msg) => this.onNats('score', err, msg),
    });
    svc.addEndpoint('rank', {
      subject: this.subj.rank,
      handler: (err, msg) => this.onNats('rank', err, msg),
    });
  }

  private onNats(op: 'score' | 'rank', err: NatsError | null, msg: ServiceMsg): void {
    if (err) return;
    let out: Outcome | Promise<Outcome>;
    if (msg.data.byteLength > this.options.limits.maxBodyBytes) {
      this.counters.badRequest++;
      out = fail(
        400,
        new FreshetError('OVERSIZE', `request body over ${this.options.limits.maxBodyBytes} bytes`),
      );
    } else {
      let body: unknown;
      try {
        body = JSON.parse(td.decode(msg.data));
        out = this.handle(op, body);
      } catch (e) {
        this.counters.badRequest++;
        out = fail(400, new FreshetError('BAD_REQUEST', `request is not JSON: ${(e as Error).message}`));
      }
    }
    if (out instanceof Promise) void out.then((o) => respond(msg, o));
    else respond(msg, out);
  }

  private onReplicaEvent(e: ReplicaEvent): void {
    if (e.kind === 'synced') this.log('info', 'shard synced', { ...e });
    else if (e.kind === 'resync') this.log('warn', 'shard resync', { ...e });
    else this.log('warn', e.kind, { shard: e.shard, code: e.error.code, error: e.error.message });
  }
}

/**
 * What the response schemas check, by hand: the body is built here from typed values, so only
 * the numbers can go wrong (a probability outside [0, 1], a version that is not a whole number).
 * Accepting means the schema would too; rejecting sends the body to the schema for its verdict.
 */
function responseLooksValid(body: ScoreResponse | RankResponse): boolean {
  const wholeNumber = (v: number) => Number.isInteger(v) && v >= 0;
  if (!wholeNumber(body.version) || !body.versions.every(wholeNumber)) return false;
  if (body.freshestAgeMs !== null && !(body.freshestAgeMs >= 0)) return false;
  const prob = (p: number) => p >= 0 && p <= 1;
  if ('scores' in body) return body.scores.every(prob);
  return body.items.every((it) => prob(it.score) && wholeNumber(it.index) && typeof it.item === 'string');
}

function respond(msg: ServiceMsg, out: Outcome): void {
  const bytes = te.encode(JSON.stringify(out.body));
  if (out.status === 200) msg.respond(bytes);
  else
    msg.respondError(out.status, (out.body as { error: ErrorEnvelope }).error.message.slice(0, 200), bytes);
}

function fail(status: number, err: FreshetError): Outcome {
  return { status, body: { error: err.toEnvelope() } };
}

/** The first few zod issues as one readable line: `candidates.3.item: expected string`. */
function zodReason(err: z.ZodError): string {
  return err.issues
    .slice(0, 5)
    .map((i) => `${i.path.length ? i.path.join('.') : '(body)'}: ${i.message}`)
    .join('; ');
}

function emptyReplicaStats(): ReplicaStats {
  return {
    ready: false,
    versions: [],
    version: 0,
    seqs: [],
    rows: 0,
    bytes: 0,
    syncing: [],
    resyncs: 0,
    deltasApplied: 0,
    deltasIgnored: 0,
    badDeltas: 0,
    tombstones: 0,
    freshestAgeMs: null,
    freshness: { p50: 0, p99: 0, count: 0 },
    futureEvents: 0,
    deltasHeld: 0,
    deltaMessages: 0,
    deltaBytes: 0,
    denseRefreshes: 0,
  };
}

/** Creates and starts a serving node (listening; it answers NOT_READY until caught up). */
export async function startServing(
  input: ServingOptionsInput,
  deps: ServingNodeDeps = {},
): Promise<ServingNode> {
  const node = new ServingNode(input, deps);
  await node.start();
  return node;
}
