import type { NatsConnection } from 'nats';
import { requestBytes } from '@freshet/nats';
import {
  decodePullReply,
  decodePushReply,
  encodePull,
  encodePush,
  FreshetError,
  hasCode,
  pullWidth,
  pushesState,
  pushWidth,
  q8Worthwhile,
  shardOfDense,
  shardOfKey,
  subjects,
  type HostPartKind,
  type ModelSpec,
  type PullTable,
  type PushReply,
  type PushTable,
} from '@freshet/protocol';
import type { HostRouter } from './host-router.js';

/** The keys a batch needs: a subset of the model's EncodedBatch. */
export interface BatchKeys {
  size: number;
  sparse: readonly { table: number; keys: Uint32Array; counts: Uint32Array }[];
  denseTables: readonly number[];
}

/** One table's share of one shard: keys and where their rows sit in the batch's rows[t]. */
interface TablePart {
  t: number;
  /** Floats per row of the pull reply (w, z and n for sequential FTRL). */
  dim: number;
  /** Floats per row of the push (Δz and Δn for sequential FTRL). */
  pushDim: number;
  dense: boolean;
  keys: Uint32Array;
  /** Row index in rows[t] of each key. */
  pos: Uint32Array;
  counts: Uint32Array;
}

/** Which shard owns which of a batch's keys; computed once per batch, reused on re-pulls. */
export interface RoutePlan {
  size: number;
  /** Row count per table id (unique keys; 1 for dense tables). */
  rowsOf: Map<number, number>;
  parts: { shard: number; tables: TablePart[] }[];
}

/** Rows for a batch and the shard versions they were read at. */
export interface PulledRows {
  /** rows[tableId]: u × dim for sparse tables, the tensor for dense ones. */
  rows: (Float32Array | undefined)[];
  /** Shard → version the rows were read at (the push's `base`). */
  base: Map<number, number>;
  /** Table ids whose rows are shared with the dense cache: copy, never transfer them. */
  shared: Set<number>;
  /**
   * Shard → the pull session that shard kept the keys of, and the tables pulled in it: the
   * push to that shard names the session instead of repeating those tables' keys.
   */
  sessions: Map<number, { id: string; tables: ReadonlySet<number> }>;
  /** Dense table → the id of the push that last changed it, where its shard says (not cached). */
  denseLast: Map<number, string>;
}

export interface ShardClientOptions {
  cluster: string;
  shards: number;
  spec: ModelSpec;
  worker: string;
  timeoutMs: number;
  retry: { attempts: number; baseMs: number; maxMs: number };
  /** Reuse a cached dense table while its shard moved fewer than this many versions (0: off). */
  denseCacheMaxLag: number;
  /** Ask for embedding rows as binary16 (half the reply bytes). */
  halfPull?: boolean | undefined;
  /** Ask for embedding rows as int8 + a scale per row (4 values or more; binary16 below). */
  int8Pull?: boolean | undefined;
  /** Push embedding rows' gradients as binary16, scaled per table (half the push bytes). */
  halfPush?: boolean | undefined;
  /** Push embedding rows' gradients as int8 + a scale per row, stochastically rounded (4+ values). */
  int8Push?: boolean | undefined;
  /**
   * Name each pull so its push can leave the keys out where the shard kept them (worker option
   * `pullSessions`). Shards that do not keep them answer without a session and get the keys.
   */
  pullSessions?: boolean | undefined;
  /**
   * Sends requests to shards that share a shard host as one host message (worker option
   * `hostRouting`); absent: one request per shard, to its own subject.
   */
  router?: HostRouter | undefined;
  signal?: AbortSignal | undefined;
}

/** Called before each retry (e.g. to extend the ack deadline of the batch's messages). */
export type OnRetry = (err: FreshetError, attempt: number) => void;

/** Outcome of pushing one batch's gradients. */
export interface PushOutcome {
  /** Shards that applied (or had already applied) their part. */
  accepted: Set<number>;
  /** Shards that rejected their part as STALE: re-pull, recompute, push to these only. */
  stale: Set<number>;
  /** Largest τ reported by the accepting shards. */
  maxStaleness: number;
  duplicates: number;
}

export interface PushMeta {
  /** Push id prefix; the shard number is appended, so each shard's part has its own stable id. */
  id: string;
  clock?: number | undefined;
  eventTs?: number | undefined;
  lrScale?: number | undefined;
  /** Examples the gradients are the mean loss over (Adagrad/FTRL tables sum them back). */
  examples?: number | undefined;
  /** Only these shards (after a STALE round); all when omitted. */
  only?: ReadonlySet<number> | undefined;
  onRetry?: OnRetry | undefined;
}

const sleep = (ms: number, signal?: AbortSignal) =>
  new Promise<void>((resolve, reject) => {
    if (signal?.aborted) {
      reject(new FreshetError('SHUTTING_DOWN', 'aborted'));
      return;
    }
    const onAbort = () => {
      clearTimeout(t);
      reject(new FreshetError('SHUTTING_DOWN', 'aborted'));
    };
    const t = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });

/**
 * Talks to the parameter-server shards for a worker: routes keys (shardOfKey / shardOfDense),
 * sends one pull per shard per batch, assembles rows aligned with the batch's unique keys, and
 * pushes per shard with a stable id so a retry after a timeout is applied once. Retryable errors
 * are retried with jittered exponential backoff; STALE is returned to the caller (it must
 * recompute); anything else, or an exhausted budget, is thrown — the caller must not ack.
 */
export class ShardClient {
  private readonly subj;
  private readonly denseShard: number[] = [];
  private readonly denseCache = new Map<number, { values: Float32Array; version: number }>();
  /** The model pushes optimizer-state deltas (sequential FTRL): pulls ask for w, z, n. */
  private readonly state: boolean;
  /**
   * The `sync` policy: every shard waits for this worker's push in each step, so every batch
   * pulls from and pushes to every shard, an empty part where it has no rows there.
   */
  private readonly sync: boolean;
  /** Highest version seen per shard, from pull and push replies. */
  private readonly known = new Map<number, number>();
  /** Requests sent (pull + push, retries included), for tests and status. */
  requests = { pull: 0, push: 0, retries: 0, denseCacheHits: 0, keylessPushes: 0, sessionMisses: 0 };
  /** Pull session ids: unique per incarnation (a restarted worker must not name an old pull). */
  private readonly sessionPrefix = `${Date.now().toString(36)}${Math.random().toString(36).slice(2, 8)}`;
  private sessionSeq = 0;

  constructor(
    private readonly nc: NatsConnection,
    private readonly o: ShardClientOptions,
  ) {
    this.subj = subjects(o.cluster);
    this.state = o.spec.tables.some(pushesState);
    this.sync = o.spec.tables.some((t) => t.staleness.policy === 'sync');
    o.spec.tables.forEach((t, i) => {
      this.denseShard[i] = t.kind === 'dense' ? shardOfDense(t, o.shards) : -1;
    });
  }

  /** Groups a batch's keys by owning shard. */
  route(batch: BatchKeys): RoutePlan {
    const nShards = this.o.shards;
    const byShard = new Map<number, TablePart[]>();
    const rowsOf = new Map<number, number>();
    const add = (shard: number, part: TablePart) => {
      let l = byShard.get(shard);
      if (!l) byShard.set(shard, (l = []));
      l.push(part);
    };
    for (const s of batch.sparse) {
      const spec = this.o.spec.tables[s.table];
      if (!spec) throw new FreshetError('UNKNOWN_TABLE', `table ${s.table} not in model spec`);
      const u = s.keys.length / 2;
      rowsOf.set(s.table, u);
      const owner = new Uint32Array(u);
      const perShard = new Uint32Array(nShards);
      for (let i = 0; i < u; i++) {
        const sh = nShards === 1 ? 0 : shardOfKey(s.table, s.keys[2 * i]!, s.keys[2 * i + 1]!, nShards);
        owner[i] = sh;
        perShard[sh]!++;
      }
      const parts: (TablePart | undefined)[] = [];
      const fill = new Uint32Array(nShards);
      for (let i = 0; i < u; i++) {
        const sh = owner[i]!;
        let p = parts[sh];
        if (!p) {
          const n = perShard[sh]!;
          p = {
            t: s.table,
            dim: pullWidth(spec, this.state),
            pushDim: pushWidth(spec),
            dense: false,
            keys: new Uint32Array(2 * n),
            pos: new Uint32Array(n),
            counts: new Uint32Array(n),
          };
          parts[sh] = p;
          add(sh, p);
        }
        const j = fill[sh]!++;
        p.keys[2 * j] = s.keys[2 * i]!;
        p.keys[2 * j + 1] = s.keys[2 * i + 1]!;
        p.pos[j] = i;
        p.counts[j] = s.counts[i] ?? 1;
      }
    }
    for (const t of batch.denseTables) {
      const spec = this.o.spec.tables[t];
      if (!spec) throw new FreshetError('UNKNOWN_TABLE', `table ${t} not in model spec`);
      rowsOf.set(t, 1);
      add(this.denseShard[t]!, {
        t,
        dim: pullWidth(spec, this.state),
        pushDim: pushWidth(spec),
        dense: true,
        keys: new Uint32Array(2),
        pos: new Uint32Array(1),
        counts: Uint32Array.of(batch.size),
      });
    }
    if (this.sync) for (let sh = 0; sh < nShards; sh++) if (!byShard.has(sh)) byShard.set(sh, []);
    return {
      size: batch.size,
      rowsOf,
      parts: [...byShard].map(([shard, tables]) => ({ shard, tables })),
    };
  }

  /** One pull per shard (in parallel), rows assembled per table. */
  async pull(plan: RoutePlan, opts: { clock?: number; onRetry?: OnRetry } = {}): Promise<PulledRows> {
    const rows: (Float32Array | undefined)[] = [];
    const shared = new Set<number>();
    const base = new Map<number, number>();
    const sessions: PulledRows['sessions'] = new Map();
    const denseLast = new Map<number, string>();
    for (const [t, n] of plan.rowsOf)
      rows[t] = new Float32Array(n * pullWidth(this.o.spec.tables[t]!, this.state));
    await Promise.all(
      plan.parts.map(async ({ shard, tables }) => {
        const want: TablePart[] = [];
        let cachedBase = Number.POSITIVE_INFINITY;
        for (const p of tables) {
          const c = p.dense ? this.cachedDense(shard, p.t) : undefined;
          if (c) {
            rows[p.t] = c.values;
            shared.add(p.t);
            cachedBase = Math.min(cachedBase, c.version);
            this.requests.denseCacheHits++;
          } else want.push(p);
        }
        if (want.length === 0 && !(this.sync && tables.length === 0)) {
          base.set(shard, cachedBase);
          return;
        }
        const req: PullTable[] = want.map((p) => ({ t: p.t, keys: p.keys }));
        const session = this.o.pullSessions ? `${this.sessionPrefix}.${++this.sessionSeq}` : undefined;
        const payload = encodePull({
          session,
          worker: this.o.worker,
          clock: opts.clock,
          state: this.state || undefined,
          // never with state: FTRL's n outgrows binary16
          half: (this.o.halfPull && !this.state) || undefined,
          q8: (this.o.int8Pull && !this.state) || undefined,
          tables: req,
        });
        const reply = await this.retry(async () => {
          this.requests.pull++;
          return decodePullReply(await this.send('pull', shard, payload));
        }, opts.onRetry);
        this.observe(shard, reply.version);
        base.set(shard, Math.min(cachedBase, reply.version));
        if (session !== undefined && reply.session)
          sessions.set(shard, { id: session, tables: new Set(want.map((p) => p.t)) });
        if (reply.tables.length !== want.length) {
          throw new FreshetError(
            'BAD_FRAME',
            `shard ${shard} answered ${reply.tables.length} tables, asked ${want.length}`,
          );
        }
        want.forEach((p, k) => {
          const got = reply.tables[k]!;
          if (got.t !== p.t || got.dim !== p.dim || got.values.length !== p.pos.length * p.dim) {
            throw new FreshetError(
              'WRONG_LENGTH',
              `shard ${shard} table ${p.t}: reply does not match the request`,
            );
          }
          const out = rows[p.t]!;
          if (p.dense) {
            const copy = got.values.slice();
            rows[p.t] = copy;
            if (got.last !== undefined) denseLast.set(p.t, got.last);
            if (this.o.denseCacheMaxLag > 0) {
              this.denseCache.set(p.t, { values: copy, version: reply.version });
              shared.add(p.t);
            }
            return;
          }
          const d = p.dim;
          for (let j = 0; j < p.pos.length; j++) {
            out.set(got.values.subarray(j * d, (j + 1) * d), p.pos[j]! * d);
          }
        });
      }),
    );
    return { rows, base, shared, sessions, denseLast };
  }

  /**
   * Pushes each shard its part of the gradients (per-key sums, aligned with the pulled rows).
   * Resolves once every shard answered: accepted, duplicate (= accepted) or STALE. The first
   * attempt's requests are issued before this returns its promise (nothing is awaited before
   * them; a host router sends them at the end of the current turn, before anything issued after
   * them to the same host): the worker's `overlapPush` relies on that order.
   */
  async push(
    plan: RoutePlan,
    pulled: PulledRows,
    grads: readonly (Float32Array | undefined)[],
    meta: PushMeta,
  ): Promise<PushOutcome> {
    const out: PushOutcome = { accepted: new Set(), stale: new Set(), maxStaleness: 0, duplicates: 0 };
    await Promise.all(
      plan.parts.map(async ({ shard, tables }) => {
        if (meta.only && !meta.only.has(shard)) return;
        const pt: PushTable[] = [];
        const session = pulled.sessions.get(shard);
        for (const p of tables) {
          const g = grads[p.t];
          if (!g) continue;
          const d = p.pushDim;
          let gg: Float32Array;
          if (p.dense) gg = g;
          else {
            gg = new Float32Array(p.pos.length * d);
            for (let j = 0; j < p.pos.length; j++)
              gg.set(g.subarray(p.pos[j]! * d, (p.pos[j]! + 1) * d), j * d);
          }
          pt.push({
            t: p.t,
            dim: d,
            keys: p.keys,
            grads: gg,
            counts: p.counts,
            // never FTRL's state deltas (n outgrows binary16) nor a dense tensor
            ...(p.dense || this.state
              ? {}
              : this.o.int8Push && q8Worthwhile(d)
                ? { q8: true }
                : this.o.halfPush || this.o.int8Push
                  ? { half: true }
                  : {}),
            ...(session && !p.dense && session.tables.has(p.t) ? { keyless: true } : {}),
          });
        }
        if (pt.length === 0 && !this.sync) {
          out.accepted.add(shard);
          return;
        }
        const keyless = pt.some((t) => t.keyless);
        // The first attempt names the session even when every table carries keys, so the shard
        // lets it go at once instead of holding it until it ages out.
        const encode = (withKeys: boolean) =>
          encodePush({
            id: `${meta.id}.s${shard}`,
            worker: this.o.worker,
            clock: meta.clock ?? 0,
            base: pulled.base.get(shard) ?? 0,
            eventTs: meta.eventTs,
            lrScale: meta.lrScale,
            examples: meta.examples,
            session: withKeys ? undefined : session?.id,
            tables: withKeys ? pt.map((t) => (t.keyless ? { ...t, keyless: false } : t)) : pt,
          });
        let reply: PushReply;
        try {
          if (keyless) this.requests.keylessPushes++;
          reply = await this.sendPush(shard, encode(false), meta.onRetry).catch((e: unknown) => {
            // The shard lost the pull's keys (it restarted, or they aged out): the same push
            // with its keys. Encoded only now: the common case never pays for it.
            if (!keyless || !hasCode(e, 'SESSION_UNKNOWN')) throw e;
            this.requests.sessionMisses++;
            return this.sendPush(shard, encode(true), meta.onRetry);
          });
        } catch (e) {
          if (hasCode(e, 'STALE')) {
            out.stale.add(shard);
            return;
          }
          if (hasCode(e, 'DUPLICATE')) {
            out.accepted.add(shard);
            out.duplicates++;
            return;
          }
          throw e;
        }
        out.accepted.add(shard);
        if (reply.duplicate) out.duplicates++;
        out.maxStaleness = Math.max(out.maxStaleness, reply.staleness);
      }),
    );
    return out;
  }

  /**
   * A dense replica's flush: each table's weight delta to its owning shard as an additive push
   * whose id is the `+`-joined parts (one per batch covered). Throws what the retries could not
   * get past; resolves with how many shards answered `duplicate` and, per table, the push id it
   * went under and the id of the push that changed the table before it (null: not known).
   */
  async pushDense(
    deltas: ReadonlyMap<number, Float32Array>,
    meta: {
      parts: readonly string[];
      examples: number;
      /** As binary16, scaled per tensor (the replica keeps the rounding for its next flush). */
      half?: boolean | undefined;
      onRetry?: OnRetry | undefined;
    },
  ): Promise<{ duplicates: number; tables: Map<number, { id: string; prev: string | null }> }> {
    const byShard = new Map<number, PushTable[]>();
    for (const [t, d] of deltas) {
      const shard = this.denseShard[t];
      if (shard === undefined || shard < 0)
        throw new FreshetError('UNKNOWN_TABLE', `table ${t} is not dense`);
      let l = byShard.get(shard);
      if (!l) byShard.set(shard, (l = []));
      // counts: the examples behind the delta, as a dense table's gradient push carries
      l.push({
        t,
        dim: d.length,
        keys: new Uint32Array(2),
        grads: d,
        counts: Uint32Array.of(meta.examples),
        ...(meta.half ? { half: true } : {}),
      });
    }
    let duplicates = 0;
    const out = new Map<number, { id: string; prev: string | null }>();
    await Promise.all(
      [...byShard].map(async ([shard, tables]) => {
        const id = meta.parts.map((p) => `${p}.s${shard}`).join('+');
        const known = (reply: PushReply | undefined) => {
          for (const t of tables)
            out.set(t.t, { id, prev: reply?.prev?.find((p) => p.t === t.t)?.id ?? null });
        };
        const payload = encodePush({
          id,
          worker: this.o.worker,
          clock: 0,
          base: this.known.get(shard) ?? 0,
          examples: meta.examples,
          add: true,
          tables,
        });
        try {
          const reply = await this.sendPush(shard, payload, meta.onRetry);
          if (reply.duplicate) duplicates++;
          known(reply);
        } catch (e) {
          if (!hasCode(e, 'DUPLICATE')) throw e;
          duplicates++;
          known(undefined);
        }
      }),
    );
    return { duplicates, tables: out };
  }

  /** One push to a shard, retried (see {@link retry}); the version it answered is observed. */
  private async sendPush(shard: number, payload: Uint8Array, onRetry?: OnRetry): Promise<PushReply> {
    const reply = await this.retry(async () => {
      this.requests.push++;
      return decodePushReply(await this.send('push', shard, payload));
    }, onRetry);
    this.observe(shard, reply.version);
    return reply;
  }

  /** One request to a shard: through its host's messages where a router is given (host-router.ts). */
  private send(op: HostPartKind, shard: number, payload: Uint8Array): Promise<Uint8Array> {
    if (this.o.router) return this.o.router.request(op, shard, payload);
    return requestBytes(this.nc, op === 'pull' ? this.subj.pull(shard) : this.subj.push(shard), payload, {
      timeoutMs: this.o.timeoutMs,
      signal: this.o.signal,
    });
  }

  private cachedDense(shard: number, t: number) {
    if (this.o.denseCacheMaxLag <= 0) return undefined;
    const c = this.denseCache.get(t);
    if (!c) return undefined;
    const now = this.known.get(shard) ?? c.version;
    return now - c.version < this.o.denseCacheMaxLag ? c : undefined;
  }

  private observe(shard: number, version: number) {
    if (version > (this.known.get(shard) ?? -1)) this.known.set(shard, version);
  }

  /** Retries retryable errors other than STALE with full-jitter exponential backoff. */
  private async retry<T>(fn: () => Promise<T>, onRetry?: OnRetry): Promise<T> {
    const { attempts, baseMs, maxMs } = this.o.retry;
    for (let attempt = 1; ; attempt++) {
      try {
        return await fn();
      } catch (e) {
        const err = e instanceof FreshetError ? e : new FreshetError('INTERNAL', String(e), { cause: e });
        const again = err.retryable && err.code !== 'STALE' && attempt < attempts && !this.o.signal?.aborted;
        if (!again) throw err;
        this.requests.retries++;
        onRetry?.(err, attempt);
        await sleep(Math.random() * Math.min(maxMs, baseMs * 2 ** (attempt - 1)), this.o.signal);
      }
    }
  }
}

/** True when every value of every gradient is finite (a non-finite update is never pushed). */
export function allFinite(grads: readonly (Float32Array | undefined)[]): boolean {
  for (const g of grads) {
    if (!g) continue;
    for (let i = 0; i < g.length; i++) if (!Number.isFinite(g[i]!)) return false;
  }
  return true;
}
