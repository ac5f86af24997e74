import { performance } from 'node:perf_hooks';
import type { NatsConnection, Subscription } from 'nats';
import {
  decodeDelta,
  decodeHostDelta,
  decodeSnapshotPage,
  encodeSnapshotRequest,
  FreshetError,
  initRow,
  shardOfDense,
  shardOfKey,
  subjects,
  type Delta,
  type ModelSpec,
  type SliceId,
  type Subjects,
} from '@freshet/protocol';
import { requestBytes } from '@freshet/nats';
import { RowTable } from './row-table.js';
import { WindowedHistogram } from './histogram.js';

/** Replica settings; the serving node fills them from its compiled options. */
export interface ReplicaOptions {
  cluster: string;
  /** Number of parameter-server shards (the shard map size). */
  shards: number;
  spec: ModelSpec;
  /**
   * Holds only the shards s with s % count = index (and the dense tables of the shards that own
   * one: every slice scores with the whole MLP). Unset: every shard.
   */
  slice?: SliceId;
  /**
   * A sliced replica's dense tensors of other slices' shards: read again from their owner this
   * often (ms), not followed by delta, whose other rows this replica would receive to drop.
   */
  denseRefreshMs?: number;
  /** 0 serves the latest values; in (0,1) serves ema ← decay·ema + (1−decay)·value per row write. */
  emaDecay?: number;
  /** Rows per snapshot page. */
  pageSize?: number;
  /** Timeout of one snapshot page request. */
  snapshotTimeoutMs?: number;
  /** Deltas buffered per shard while it resyncs; beyond it the resync starts over. */
  maxBufferedDeltas?: number;
  /** First retry delay after a failed snapshot; doubles up to 5 s. */
  retryMs?: number;
  /** Window of the recent freshness quantiles. */
  freshnessWindowMs?: number;
  /**
   * Longest stretch (ms) spent applying deltas before yielding to the event loop: a big delta is
   * applied in steps so requests never wait behind it for more than about this long.
   */
  applyStepMs?: number;
  signal?: AbortSignal;
  /** Called on notable events (resyncs, bad deltas, failed snapshots); logs, counters. */
  onEvent?: (e: ReplicaEvent) => void;
  now?: () => number;
}

export type ReplicaEvent =
  | { kind: 'synced'; shard: number; seq: number; rows: number; ms: number }
  | {
      kind: 'resync';
      shard: number;
      reason: 'gap' | 'restart' | 'bad-delta' | 'overflow' | 'reconnect' | 'unpin';
      expected: number;
      got: number;
    }
  | { kind: 'snapshot-failed'; shard: number; error: FreshetError }
  /** shard −1: an undecodable host delta (whose shards are unknown: every shard resyncs). */
  | { kind: 'bad-delta'; shard: number; error: FreshetError };

export type ReplicaState = 'idle' | 'starting' | 'running' | 'stopped';

/** What a replica holds of a shard: all its tables, only the dense ones it owns, or nothing. */
const enum Follow {
  None = 0,
  Dense = 1,
  All = 2,
}

interface ShardReplica {
  /** The tables being served; replaced whole when a resync completes. */
  tables: RowTable[];
  /** Last applied delta seq (or the snapshot's seq). */
  seq: number;
  version: number;
  synced: boolean;
  syncing: boolean;
  buffer: Delta[];
  overflow: boolean;
  /** Emission time of the last delta applied (ms since epoch). */
  lastDeltaTs: number;
  /** Rows changed or dropped by deltas: lets callers see updates arrive. */
  applied: number;
  /** Bumped when a resync swaps in new tables (every table's values may have changed). */
  stamp: number;
  /** Per table id: bumped when a delta touches that table. */
  tableStamps: number[];
}

/** Counters a status endpoint reports. */
export interface ReplicaStats {
  ready: boolean;
  versions: number[];
  version: number;
  seqs: number[];
  rows: number;
  bytes: number;
  syncing: number[];
  resyncs: number;
  deltasApplied: number;
  deltasIgnored: number;
  badDeltas: number;
  tombstones: number;
  /** now − emission time of the newest delta applied; null before any delta. */
  freshestAgeMs: number | null;
  freshness: { p50: number; p99: number; count: number };
  /** eventTs later than the local clock (clock skew), counted as 0 ms. */
  futureEvents: number;
  /** Deltas left unapplied while pinned (see {@link Replica.pin}). */
  deltasHeld: number;
  /**
   * Delta messages (a shard's or a host's) and their bytes received on this node's
   * subscriptions: what the bus delivers to it, which a sliced node shrinks.
   */
  deltaMessages: number;
  deltaBytes: number;
  /** A sliced replica: other slices' dense tensors read again from their owners (`denseRefreshMs`). */
  denseRefreshes: number;
}

/**
 * A serving node's local copy of the model's tables. It subscribes to every shard's delta subject
 * first, then pulls a snapshot of each shard in pages, then applies the deltas it buffered that
 * are newer than the snapshot, so no update published during the snapshot is lost. A gap in a
 * shard's delta sequence (a missed message) or a sequence going backwards (a restarted shard)
 * triggers a resync of that shard: the old rows keep being served until the new snapshot has
 * caught up, then they are swapped in one synchronous step. Tombstoned rows are dropped. A key
 * with no row gets the deterministic default (`initRow` with the table's init), never an error.
 * A sliced replica (`slice`) does all this for its own shards only; the dense tensors of other
 * slices' shards it reads again from their owners every `denseRefreshMs`; {@link gather}
 * refuses the keys of other slices' shards.
 */
export class Replica {
  readonly spec: ModelSpec;
  readonly nShards: number;
  readonly freshness: WindowedHistogram;
  private readonly subj: Subjects;
  private readonly opts: Required<
    Pick<
      ReplicaOptions,
      | 'emaDecay'
      | 'pageSize'
      | 'snapshotTimeoutMs'
      | 'maxBufferedDeltas'
      | 'retryMs'
      | 'applyStepMs'
      | 'denseRefreshMs'
    >
  >;
  private readonly shards: ShardReplica[];
  /** Per shard: what this replica holds of it ({@link Follow}). */
  private readonly follow: Uint8Array;
  /** The shards followed at all, in order. */
  private readonly followed: number[];
  private readonly denseOwner: number[];
  private readonly denseDefault = new Map<number, Float32Array>();
  private readonly abort = new AbortController();
  private readonly now: () => number;
  private subs: Subscription[] = [];
  private syncs = new Set<Promise<void>>();
  /** Other slices' dense owners whose tensors are being read again periodically. */
  private readonly refreshing = new Set<number>();
  /** Deltas decoded and in order, waiting to be applied (all shards; the head may be part-applied). */
  private queue: Delta[] = [];
  /** Where the head of {@link queue} stands: table index and row within it. */
  private cursor: { table: number; row: number } | undefined;
  private drainScheduled = false;
  private st: ReplicaState = 'idle';
  private readyWaiters: (() => void)[] = [];
  /** Pinned: the served weights stay as they are; resolves the waiting resyncs when unpinned. */
  private pinned: { released: Promise<void>; release: () => void } | undefined;
  private counters = {
    denseRefreshes: 0,
    deltaMessages: 0,
    deltaBytes: 0,
    deltasHeld: 0,
    resyncs: 0,
    deltasApplied: 0,
    deltasIgnored: 0,
    badDeltas: 0,
    tombstones: 0,
    futureEvents: 0,
  };

  constructor(
    private readonly nc: NatsConnection,
    private readonly o: ReplicaOptions,
  ) {
    if (!Number.isInteger(o.shards) || o.shards < 1) throw new FreshetError('CONFIG', 'shards must be ≥ 1');
    this.spec = o.spec;
    this.nShards = o.shards;
    this.subj = subjects(o.cluster);
    this.now = o.now ?? Date.now;
    this.opts = {
      emaDecay: o.emaDecay ?? 0,
      pageSize: o.pageSize ?? 8192,
      snapshotTimeoutMs: o.snapshotTimeoutMs ?? 5000,
      maxBufferedDeltas: o.maxBufferedDeltas ?? 10_000,
      retryMs: o.retryMs ?? 100,
      applyStepMs: o.applyStepMs ?? 1,
      denseRefreshMs: o.denseRefreshMs ?? 200,
    };
    if (!(this.opts.emaDecay >= 0 && this.opts.emaDecay < 1))
      throw new FreshetError('CONFIG', 'emaDecay must be in [0, 1)');
    this.freshness = new WindowedHistogram(o.freshnessWindowMs ?? 60_000, this.now);
    this.denseOwner = this.spec.tables.map((t) => (t.kind === 'dense' ? shardOfDense(t, this.nShards) : -1));
    const sl = o.slice;
    if (sl && !(Number.isInteger(sl.count) && sl.count >= 1 && sl.count <= this.nShards))
      throw new FreshetError('CONFIG', `slice count ${sl.count} must be in [1, shards = ${this.nShards}]`);
    if (sl && !(Number.isInteger(sl.index) && sl.index >= 0 && sl.index < sl.count))
      throw new FreshetError('CONFIG', `slice index ${sl.index} must be in [0, ${sl.count})`);
    this.follow = Uint8Array.from({ length: this.nShards }, (_, s) =>
      !sl || s % sl.count === sl.index
        ? Follow.All
        : this.denseOwner.includes(s)
          ? Follow.Dense
          : Follow.None,
    );
    this.followed = [...this.follow.keys()].filter((s) => this.follow[s] !== Follow.None);
    this.shards = Array.from({ length: this.nShards }, (_, s) => ({
      tables: this.emptyTables(),
      seq: 0,
      version: 0,
      // a shard this replica does not hold has nothing to wait for
      synced: this.follow[s] === Follow.None,
      syncing: false,
      buffer: [],
      overflow: false,
      lastDeltaTs: 0,
      applied: 0,
      stamp: 0,
      tableStamps: this.spec.tables.map(() => 0),
    }));
    o.signal?.addEventListener('abort', () => void this.stop(), { once: true });
  }

  get state(): ReplicaState {
    return this.st;
  }

  /** The slice held (undefined: the whole model). */
  get slice(): SliceId | undefined {
    return this.o.slice;
  }

  /** Whether this replica holds every table of shard `s` (all shards unless sliced). */
  holds(s: number): boolean {
    return this.follow[s] === Follow.All;
  }

  /** Whether it holds only the dense tensors of shard `s` (another slice's, read every denseRefreshMs). */
  holdsDenseOnly(s: number): boolean {
    return this.follow[s] === Follow.Dense;
  }

  /** True once every shard has loaded a snapshot and applied the deltas buffered meanwhile. */
  get ready(): boolean {
    return this.st === 'running' && this.shards.every((s) => s.synced);
  }

  /** Whether a table serves its moving average. */
  get usesEma(): boolean {
    return this.opts.emaDecay > 0;
  }

  /**
   * Subscribes to the deltas (confirmed by the server before any snapshot is read) and starts
   * syncing every shard. Resolves once subscribed; await {@link whenReady} for the data.
   */
  async start(): Promise<void> {
    if (this.st !== 'idle') throw new FreshetError('CONFIG', `replica already ${this.st}`);
    this.st = 'starting';
    const received = (data: Uint8Array) => {
      this.counters.deltaMessages++;
      this.counters.deltaBytes += data.byteLength;
    };
    const onDelta = (err: unknown, msg: { subject: string; data: Uint8Array }) => {
      if (err) return;
      received(msg.data);
      this.onDelta(msg.subject, msg.data);
    };
    const onHostDelta = (err: unknown, msg: { data: Uint8Array }) => {
      if (err) return;
      received(msg.data);
      this.onHostDelta(msg.data);
    };
    const sl = this.o.slice;
    if (!sl) {
      this.subs.push(this.nc.subscribe(this.subj.deltaAll, { callback: onDelta }));
      // shard hosts with `hostDeltas` publish several shards' deltas in one message
      this.subs.push(this.nc.subscribe(this.subj.hostDeltaAll, { callback: onHostDelta }));
    } else {
      // Only the shards it holds: a sliced node's bytes and messages shrink with its slice.
      for (const s of this.followed)
        if (this.follow[s] === Follow.All)
          this.subs.push(this.nc.subscribe(this.subj.delta(s), { callback: onDelta }));
      // hosts that split their deltas per slice (shard option `servingSlices`), and hosts that
      // do not (their parts of other shards are dropped on arrival)
      this.subs.push(
        this.nc.subscribe(this.subj.hostDeltaSliceAll(sl.count, sl.index), { callback: onHostDelta }),
        this.nc.subscribe(this.subj.hostDeltaWhole, { callback: onHostDelta }),
      );
    }
    // The server must have the subscription before the first snapshot page is read, or deltas
    // published in between would be missed without a gap to show it.
    await this.nc.flush();
    this.st = 'running';
    for (const s of this.followed) this.resync(s);
    void this.watchConnection();
  }

  /**
   * Deltas published while the connection was down are lost, and a shard that publishes nothing
   * afterwards would never show the gap (its evictions would go unseen): resync every shard on
   * reconnect.
   */
  private async watchConnection(): Promise<void> {
    const it = this.nc.status()[Symbol.asyncIterator]();
    const stopped = new Promise<IteratorResult<unknown>>((resolve) =>
      this.abort.signal.addEventListener('abort', () => resolve({ done: true, value: undefined }), {
        once: true,
      }),
    );
    for (;;) {
      const next = await Promise.race([it.next(), stopped]);
      if (next.done || this.st !== 'running') break;
      if ((next.value as { type?: string }).type === 'reconnect')
        for (const s of this.followed) this.startResync(s, 'reconnect', 0, 0);
    }
    await it.return?.();
  }

  /** Resolves when {@link ready}; rejects when stopped first or the signal aborts. */
  whenReady(signal?: AbortSignal): Promise<void> {
    if (this.ready) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const onAbort = () => reject(new FreshetError('SHUTTING_DOWN', 'stopped before the replica was ready'));
      if (signal?.aborted) return onAbort();
      signal?.addEventListener('abort', onAbort, { once: true });
      this.readyWaiters.push(() => {
        signal?.removeEventListener('abort', onAbort);
        if (this.ready) resolve();
        else onAbort();
      });
    });
  }

  /** Stops following deltas and abandons resyncs in progress. */
  async stop(): Promise<void> {
    if (this.st === 'stopped') return;
    this.st = 'stopped';
    this.abort.abort();
    for (const sub of this.subs) sub.unsubscribe();
    this.subs = [];
    this.queue = [];
    this.cursor = undefined;
    this.wakeReady();
    await Promise.allSettled([...this.syncs]);
  }

  /**
   * Pins the served weights (`freshet model` guard, docs/model-versions.md): deltas are counted
   * and dropped, and a resync that completes meanwhile waits before swapping its tables in, so
   * scores stay exactly those of the weights held now. {@link unpin} resyncs every shard.
   */
  pin(): void {
    if (this.pinned) return;
    let release!: () => void;
    const released = new Promise<void>((r) => (release = r));
    this.pinned = { released, release };
    // a part-applied head delta is finished (its rows carry whole values): nothing half-written
    if (this.cursor) {
      const d = this.queue.shift()!;
      this.applyRows(this.shards[d.shard]!, this.shards[d.shard]!.tables, d, this.cursor, Infinity);
      this.cursor = undefined;
      this.finish(this.shards[d.shard]!, d);
    }
    this.counters.deltasHeld += this.queue.length;
    this.queue = [];
  }

  /** Follows the shards again from fresh snapshots (the deltas dropped while pinned are gone). */
  unpin(): void {
    const p = this.pinned;
    if (!p) return;
    this.pinned = undefined;
    p.release();
    if (this.st !== 'running') return;
    for (const s of this.followed) this.startResync(s, 'unpin', 0, 0);
  }

  get isPinned(): boolean {
    return this.pinned !== undefined;
  }

  // ------------------------------------------------------------------ reads

  /**
   * Rows of a sparse table for interleaved keys, row-major into `out` (keys.length/2 × dim).
   * Keys without a row get the table's deterministic default.
   */
  gather(table: number, keys: Uint32Array, out: Float32Array, outAt = 0): void {
    const spec = this.spec.tables[table];
    if (!spec) throw new FreshetError('UNKNOWN_TABLE', `table ${table}`);
    const dim = spec.dim;
    const n = keys.length >>> 1;
    const ema = this.usesEma;
    if (spec.kind === 'dense') {
      for (let i = 0; i < n; i++) out.set(this.dense(table), outAt + i * dim);
      return;
    }
    for (let i = 0; i < n; i++) {
      const lo = keys[2 * i]!;
      const hi = keys[2 * i + 1]!;
      const shard = shardOfKey(table, lo, hi, this.nShards);
      // a default row would be a silently wrong score: the caller asks the key's slice instead
      if (this.follow[shard] !== Follow.All)
        throw new FreshetError('INTERNAL', `key of shard ${shard}, which this node's slice does not hold`);
      const rt = this.shards[shard]!.tables[table]!;
      const row = rt.rowOf(lo, hi);
      if (row >= 0) rt.copyRow(row, out, outAt + i * dim, ema);
      else initRow(spec.init, lo, hi, out, outAt + i * dim, dim);
    }
  }

  /** True when the replica holds a row for the key (false means the default is served). */
  has(table: number, lo: number, hi: number): boolean {
    const spec = this.spec.tables[table];
    if (!spec) return false;
    const owner = spec.kind === 'dense' ? this.denseOwner[table]! : shardOfKey(table, lo, hi, this.nShards);
    return this.shards[owner]!.tables[table]!.rowOf(lo, hi) >= 0;
  }

  /**
   * A dense table's whole tensor as a read-only view (valid until the next delta for it is
   * applied: callers use it synchronously).
   */
  dense(table: number): Float32Array {
    const spec = this.spec.tables[table];
    if (!spec) throw new FreshetError('UNKNOWN_TABLE', `table ${table}`);
    const rt = this.shards[this.denseOwner[table] ?? 0]!.tables[table]!;
    const row = spec.kind === 'dense' ? rt.rowOf(0, 0) : -1;
    if (row >= 0) return rt.view(row, this.usesEma);
    let d = this.denseDefault.get(table);
    if (!d) {
      d = new Float32Array(spec.dim);
      initRow(spec.init, 0, 0, d);
      this.denseDefault.set(table, d);
    }
    return d;
  }

  /**
   * Changes whenever a dense table's served values may have changed (its owner shard applied a
   * delta or resynced): scorers key caches of derived layouts on it.
   */
  denseStamp(table: number): number {
    const s = this.shards[this.denseOwner[table] ?? 0]!;
    // Both counters only grow, so their sum changes whenever either does; a delta that touches
    // other tables (embedding rows, mostly) leaves the caches built on this one valid.
    return s.stamp + (s.tableStamps[table] ?? 0);
  }

  /** Per-shard versions (the shard's version after the last delta applied). */
  versions(): number[] {
    return this.shards.map((s) => s.version);
  }

  /** Sum of the shard versions: grows with every update the replica has applied. */
  version(): number {
    return this.shards.reduce((a, s) => a + s.version, 0);
  }

  /** Age of the newest delta applied (ms), or null when none has arrived since start. */
  freshestAgeMs(): number | null {
    const newest = this.newestDeltaTs();
    return newest > 0 ? Math.max(0, this.now() - newest) : null;
  }

  /** Emission time of the newest delta applied (ms since epoch; 0 when none). */
  newestDeltaTs(): number {
    let newest = 0;
    for (const s of this.shards) if (s.lastDeltaTs > newest) newest = s.lastDeltaTs;
    return newest;
  }

  stats(): ReplicaStats {
    let rows = 0;
    let bytes = 0;
    for (const s of this.shards)
      for (const t of s.tables) {
        rows += t.size;
        bytes += t.bytes;
      }
    return {
      ready: this.ready,
      versions: this.versions(),
      version: this.version(),
      seqs: this.shards.map((s) => s.seq),
      rows,
      bytes,
      syncing: this.shards.flatMap((s, i) => (s.syncing ? [i] : [])),
      ...this.counters,
      freshestAgeMs: this.freshestAgeMs(),
      freshness: this.freshness.recent(),
    };
  }

  // ------------------------------------------------------------------ deltas

  /** Each part as if it had come on its shard's own subject (gaps and resyncs per shard). */
  private onHostDelta(data: Uint8Array): void {
    if (this.st !== 'running') return;
    let parts: { shard: number; frame: Uint8Array }[];
    try {
      parts = decodeHostDelta(data);
    } catch (e) {
      this.counters.badDeltas++;
      const error = e instanceof FreshetError ? e : new FreshetError('BAD_FRAME', String(e));
      this.o.onEvent?.({ kind: 'bad-delta', shard: -1, error });
      // whose deltas it carried is unknown: every shard catches up from a snapshot
      for (const s of this.followed) this.startResync(s, 'bad-delta', 0, 0);
      return;
    }
    for (const p of parts) this.onDelta(this.subj.delta(p.shard), p.frame);
  }

  private onDelta(subject: string, data: Uint8Array): void {
    if (this.st !== 'running') return;
    const token = Number(subject.slice(subject.lastIndexOf('.') + 1));
    let d: Delta;
    try {
      d = decodeDelta(data);
      if (d.shard !== token)
        throw new FreshetError('BAD_REQUEST', `delta for shard ${d.shard} on ${subject}`);
    } catch (e) {
      this.counters.badDeltas++;
      const error = e instanceof FreshetError ? e : new FreshetError('BAD_FRAME', String(e));
      this.o.onEvent?.({ kind: 'bad-delta', shard: token, error });
      // An undecodable delta on a known shard is a missed update: catch up from a snapshot.
      if (Number.isInteger(token) && token >= 0 && token < this.nShards && this.follow[token] === Follow.All)
        this.startResync(token, 'bad-delta', 0, 0);
      return;
    }
    // (another slice's dense owner is read again every denseRefreshMs, not followed by delta)
    if (d.shard >= this.nShards || this.follow[d.shard] !== Follow.All) {
      this.counters.deltasIgnored++;
      return;
    }
    const s = this.shards[d.shard]!;
    if (this.pinned && s.synced) {
      this.counters.deltasHeld++;
      return;
    }
    if (s.syncing) {
      this.bufferDelta(s, d);
      return;
    }
    this.queue.push(d);
    // Usually nothing is queued and a delta applies right here, within one step.
    if (!this.drainScheduled && this.queue.length === 1) this.drain();
  }

  private bufferDelta(s: ShardReplica, d: Delta): void {
    if (s.buffer.length >= this.opts.maxBufferedDeltas) s.overflow = true;
    else s.buffer.push(d);
  }

  /**
   * Applies queued deltas in order for up to `applyStepMs`, then yields (setImmediate) and goes on.
   * A shard's seq, version and freshness advance when its delta is fully applied; in between a
   * scorer may see some of its rows new and some old, as it would a moment earlier or later.
   */
  private drain(): void {
    this.drainScheduled = false;
    const deadline = performance.now() + this.opts.applyStepMs;
    while (this.queue.length > 0 && this.st === 'running') {
      const d = this.queue[0]!;
      const s = this.shards[d.shard]!;
      if (!this.cursor) {
        if (s.syncing) {
          this.queue.shift();
          this.bufferDelta(s, d);
          continue;
        }
        if (d.seq !== s.seq + 1) {
          this.queue.shift();
          // Behind: a delta was lost. Backwards: the shard restarted with a fresh sequence.
          this.startResync(d.shard, d.seq > s.seq ? 'gap' : 'restart', s.seq + 1, d.seq, d);
          continue;
        }
        const err = this.checkDelta(d);
        if (err) {
          this.queue.shift();
          this.counters.badDeltas++;
          this.o.onEvent?.({ kind: 'bad-delta', shard: d.shard, error: err });
          this.startResync(d.shard, 'bad-delta', s.seq + 1, d.seq);
          continue;
        }
        this.cursor = { table: 0, row: 0 };
      }
      if (!this.applyRows(s, s.tables, d, this.cursor, deadline)) break;
      this.queue.shift();
      this.cursor = undefined;
      this.finish(s, d);
      if (performance.now() >= deadline) break;
    }
    if (this.queue.length > 0 && this.st === 'running') {
      this.drainScheduled = true;
      setImmediate(() => this.drain());
    }
  }

  /** Shape checks beyond the codec's: table ids and dims must match the model spec. */
  private checkDelta(d: Delta): FreshetError | undefined {
    for (const t of d.tables) {
      const spec = this.spec.tables[t.t];
      if (!spec) return new FreshetError('UNKNOWN_TABLE', `delta for table ${t.t}`);
      if (t.dim !== spec.dim)
        return new FreshetError('WRONG_LENGTH', `table ${t.t} dim ${t.dim} ≠ ${spec.dim}`);
    }
    return undefined;
  }

  /** Applies a whole delta in one synchronous step (the resync swap replays buffered ones so). */
  private apply(s: ShardReplica, tables: RowTable[], d: Delta): void {
    this.applyRows(s, tables, d, { table: 0, row: 0 }, Number.POSITIVE_INFINITY);
    this.finish(s, d);
  }

  /**
   * Writes a delta's rows and tombstones from `at` on, checking the clock every 64 rows; returns
   * true when done, else leaves `at` where it stopped. A table's stamp moves as soon as its part is
   * written, so caches built on a dense table never outlive its new values.
   */
  private applyRows(
    s: ShardReplica,
    tables: RowTable[],
    d: Delta,
    at: { table: number; row: number },
    deadline: number,
  ): boolean {
    for (; at.table < d.tables.length; at.table++, at.row = 0) {
      const t = d.tables[at.table]!;
      const rt = tables[t.t]!;
      const n = t.keys.length >>> 1;
      const dead = t.deadKeys.length >>> 1;
      while (at.row < n + dead) {
        const end = Math.min(n + dead, at.row + 64);
        for (let i = at.row; i < end; i++) {
          if (i < n) rt.upsert(t.keys[2 * i]!, t.keys[2 * i + 1]!, t.values, i * t.dim);
          else rt.delete(t.deadKeys[2 * (i - n)]!, t.deadKeys[2 * (i - n) + 1]!);
        }
        at.row = end;
        if (at.row < n + dead && performance.now() >= deadline) return false;
      }
      s.tableStamps[t.t] = (s.tableStamps[t.t] ?? 0) + 1;
    }
    return true;
  }

  /** A delta fully written: the shard's seq, version and freshness move. */
  private finish(s: ShardReplica, d: Delta): void {
    for (const t of d.tables) {
      const dead = t.deadKeys.length >>> 1;
      this.counters.tombstones += dead;
      s.applied += (t.keys.length >>> 1) + dead;
    }
    s.seq = d.seq;
    if (d.version > s.version) s.version = d.version;
    if (d.ts > s.lastDeltaTs) s.lastDeltaTs = d.ts;
    this.counters.deltasApplied++;
    // Freshness: the update of each probe event is now in the weights this node serves.
    const now = this.now();
    for (const ts of d.eventTs) {
      const age = now - ts;
      if (age < 0) this.counters.futureEvents++;
      this.freshness.record(Math.max(0, age));
    }
  }

  // ------------------------------------------------------------------ snapshots

  private startResync(
    shard: number,
    reason: 'gap' | 'restart' | 'bad-delta' | 'overflow' | 'reconnect' | 'unpin',
    expected: number,
    got: number,
    first?: Delta,
  ): void {
    const s = this.shards[shard]!;
    if (s.syncing) return;
    this.counters.resyncs++;
    this.o.onEvent?.({ kind: 'resync', shard, reason, expected, got });
    s.buffer = first ? [first] : [];
    // Queued deltas of this shard (a part-applied head too: rows carry whole values, so replaying
    // it is harmless) wait for the snapshot with the rest.
    if (this.queue.some((q) => q.shard === shard)) {
      if (this.cursor && this.queue[0]!.shard === shard) this.cursor = undefined;
      for (const q of this.queue) if (q.shard === shard) this.bufferDelta(s, q);
      this.queue = this.queue.filter((q) => q.shard !== shard);
    }
    this.resync(shard);
  }

  private resync(shard: number): void {
    const s = this.shards[shard]!;
    s.syncing = true;
    const p = this.syncLoop(shard).finally(() => this.syncs.delete(p));
    this.syncs.add(p);
  }

  private async syncLoop(shard: number): Promise<void> {
    const s = this.shards[shard]!;
    let delay = this.opts.retryMs;
    while (this.st === 'running') {
      const t0 = this.now();
      try {
        // pinned: a shard that already serves keeps its tables until unpinned (then re-read)
        if (this.pinned && s.synced) {
          await Promise.race([this.pinned.released, sleep(60_000, this.abort.signal)]);
          continue;
        }
        const snap = await this.snapshot(shard);
        if (this.st !== 'running') return;
        if (this.pinned && s.synced) continue;
        if (s.overflow) {
          s.overflow = false;
          s.buffer = [];
          this.counters.resyncs++;
          this.o.onEvent?.({ kind: 'resync', shard, reason: 'overflow', expected: 0, got: 0 });
          continue;
        }
        // Deltas newer than the oldest page; each carries whole row values, so replaying one the
        // page already contained is harmless and the last write per row wins.
        const pending = s.buffer.filter((d) => d.seq > snap.seq).sort((a, b) => a.seq - b.seq);
        let expect = snap.seq + 1;
        let consecutive = true;
        for (const d of pending) {
          if (d.seq !== expect || this.checkDelta(d)) {
            consecutive = false;
            break;
          }
          expect++;
        }
        if (!consecutive) {
          s.buffer = s.buffer.filter((d) => d.seq > snap.seq);
          throw new FreshetError('UNAVAILABLE', `deltas after snapshot seq ${snap.seq} are not consecutive`);
        }
        // Everything below runs synchronously: scorers see either the old rows or the new ones.
        const target: ShardReplica = { ...s, seq: snap.seq, version: snap.version, applied: 0 };
        for (const d of pending) this.apply(target, snap.tables, d);
        s.tables = snap.tables;
        s.seq = target.seq;
        // the snapshot's version is the shard's now: lower after a rollback (docs/model-versions.md)
        s.version = target.version;
        s.lastDeltaTs = target.lastDeltaTs;
        s.applied += target.applied;
        s.stamp++;
        s.buffer = [];
        s.syncing = false;
        s.synced = true;
        this.o.onEvent?.({
          kind: 'synced',
          shard,
          seq: s.seq,
          rows: s.tables.reduce((a, t) => a + t.size, 0),
          ms: this.now() - t0,
        });
        this.wakeReady();
        if (this.follow[shard] === Follow.Dense && !this.refreshing.has(shard)) {
          this.refreshing.add(shard);
          const p = this.refreshDense(shard).finally(() => this.syncs.delete(p));
          this.syncs.add(p);
        }
        return;
      } catch (e) {
        if (this.st !== 'running') return;
        const error = e instanceof FreshetError ? e : new FreshetError('INTERNAL', String(e));
        this.o.onEvent?.({ kind: 'snapshot-failed', shard, error });
        await sleep(delay, this.abort.signal);
        delay = Math.min(delay * 2, 5000);
      }
    }
  }

  /**
   * Another slice's dense owner: its dense tensors read again every `denseRefreshMs` and swapped
   * in whole when its version moved (a scorer sees the old tensor or the new one). Not by delta:
   * its deltas carry its sparse rows too, which this slice does not hold. A failed read keeps the
   * tensors it has and tries again next time.
   */
  private async refreshDense(shard: number): Promise<void> {
    const s = this.shards[shard]!;
    while (this.st === 'running') {
      await sleep(this.opts.denseRefreshMs, this.abort.signal);
      if (this.st !== 'running' || this.pinned) continue;
      try {
        const snap = await this.snapshot(shard);
        if (this.st !== 'running' || this.pinned) continue;
        this.counters.denseRefreshes++;
        if (snap.lastSeq === s.seq && snap.firstVersion === s.version) continue;
        // Each tensor is one state (a page); two tensors of one owner may be a delta apart, as a
        // delta being applied leaves them a moment: the version held is the older page's.
        s.tables = snap.tables;
        s.seq = snap.lastSeq;
        s.version = snap.firstVersion;
        s.stamp++;
      } catch (e) {
        if (this.st !== 'running') return;
        const error = e instanceof FreshetError ? e : new FreshetError('INTERNAL', String(e));
        this.o.onEvent?.({ kind: 'snapshot-failed', shard, error });
      }
    }
  }

  /** Pulls every table of one shard in pages into fresh tables. */
  private async snapshot(
    shard: number,
  ): Promise<{ tables: RowTable[]; seq: number; lastSeq: number; version: number; firstVersion: number }> {
    const tables = this.emptyTables();
    let seq = Number.POSITIVE_INFINITY;
    let lastSeq = 0;
    let firstVersion = Number.POSITIVE_INFINITY;
    let version = 0;
    const all = this.follow[shard] === Follow.All;
    const wanted = this.spec.tables.flatMap((t, i) =>
      (t.kind === 'sparse' && all) || this.denseOwner[i] === shard ? [i] : [],
    );
    // A shard with nothing to hold still reports its seq on an (empty) page of table 0.
    if (wanted.length === 0) wanted.push(0);
    for (const t of wanted) {
      const spec = this.spec.tables[t]!;
      let cursor: number | null = 0;
      while (cursor !== null) {
        const reply = await requestBytes(
          this.nc,
          this.subj.snapshot(shard),
          encodeSnapshotRequest({ t, cursor, limit: this.opts.pageSize }),
          { timeoutMs: this.opts.snapshotTimeoutMs, signal: this.abort.signal },
        );
        const page = decodeSnapshotPage(reply);
        if (page.t !== t) throw new FreshetError('BAD_REQUEST', `asked for table ${t}, got ${page.t}`);
        if (page.dim !== spec.dim && page.keys.length > 0)
          throw new FreshetError('WRONG_LENGTH', `table ${t} dim ${page.dim} ≠ ${spec.dim}`);
        const rt = tables[t]!;
        const n = page.keys.length >>> 1;
        for (let i = 0; i < n; i++)
          rt.upsert(page.keys[2 * i]!, page.keys[2 * i + 1]!, page.values, i * spec.dim);
        if (page.seq < seq) seq = page.seq;
        if (page.seq > lastSeq) lastSeq = page.seq;
        if (page.version > version) version = page.version;
        if (page.version < firstVersion) firstVersion = page.version;
        if (page.next !== null && page.next <= cursor && n === 0)
          throw new FreshetError(
            'BAD_REQUEST',
            `snapshot cursor does not advance (${cursor} → ${page.next})`,
          );
        cursor = page.next;
      }
    }
    return {
      tables,
      seq: Number.isFinite(seq) ? seq : 0,
      lastSeq,
      version,
      firstVersion: Number.isFinite(firstVersion) ? firstVersion : 0,
    };
  }

  private emptyTables(): RowTable[] {
    return this.spec.tables.map((t) => new RowTable(t.dim, this.opts.emaDecay, t.kind === 'dense' ? 1 : 16));
  }

  private wakeReady(): void {
    if (!this.ready && this.st !== 'stopped') return;
    const w = this.readyWaiters;
    this.readyWaiters = [];
    for (const f of w) f();
  }
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const t = setTimeout(done, ms);
    function done() {
      clearTimeout(t);
      signal.removeEventListener('abort', done);
      resolve();
    }
    signal.addEventListener('abort', done, { once: true });
  });
}
