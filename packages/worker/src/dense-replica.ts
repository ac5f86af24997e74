import { DenseOptimizer } from '@freshet/model';
import { FreshetError, halfPushRoundTrip, type ModelSpec } from '@freshet/protocol';
import type { OnRetry, ShardClient } from './shard-client.js';
import type { WorkerLog } from './worker-types.js';

export interface DenseReplicaOptions {
  syncExamples: number;
  maxDelayMs: number;
  /** Flush the weight change as binary16 with error feedback (see worker option `dense.halfFlush`). */
  halfFlush?: boolean | undefined;
}

/** A batch whose dense update waits for the flush that carries it to the shard. */
interface Waiting {
  id: string;
  at: number;
  examples: number;
  resolve: () => void;
  reject: (e: unknown) => void;
}

/** One flush: the weight change since the last one, under the ids of the batches it covers. */
interface Flush {
  parts: string[];
  deltas: Map<number, Float32Array>;
  examples: number;
  waiting: Waiting[];
}

export interface DenseReplicaCounters {
  flushes: number;
  /** Flushes the shard had already applied (a retry, or a batch recovered by another owner). */
  duplicateFlushes: number;
  flushFailures: number;
  /** Batches whose dense update is applied here and not yet on the shard. */
  pendingBatches: number;
  /** Dense tables' weights pulled back after flushes. */
  refreshes: number;
  /** Pull-backs skipped: no other worker had changed the tensors since this one's last flush. */
  refreshesSkipped: number;
}

/**
 * The dense tables (the MLP) as a worker-side replica: each batch's dense gradient is applied at
 * once with the table's own optimizer (DenseOptimizer), so the next batch already sees it, and
 * every `syncExamples` examples (or `maxDelayMs`) the weight change since the previous flush goes to
 * the owning shard as one additive push; the shard adds every worker's changes, and the pull that
 * follows brings the others' back: w ← shard + (w − base), so what this worker applied since the
 * flush is kept.
 *
 * Exactly once: a flush's push id is the `+`-joined ids of the batches it covers (`<batch>d`),
 * and a batch is acked only after the flush carrying it was accepted. A batch recovered from a
 * manifest (its earlier owner may or may not have flushed it) goes alone ({@link addAlone}), so
 * the shard's per-part dedupe answers it exactly. A failed flush is retried as it was (same id,
 * same deltas) before anything newer goes out.
 */
export class DenseReplica {
  readonly tables: number[];
  private readonly opt = new Map<number, DenseOptimizer>();
  private readonly w = new Map<number, Float32Array>();
  /** The shard's value as this worker last knew it plus every change already flushed. */
  private readonly base = new Map<number, Float32Array>();
  /**
   * Per table, the id of the push the base last caught up with: this worker's last accepted
   * flush, or the shard's `last` in the pull that loaded or refreshed the base.
   */
  private readonly lastSeen = new Map<number, string>();
  private waiting: Waiting[] = [];
  /** Examples of the batches in `waiting`. */
  private pendingExamples = 0;
  /** A flush is queued and has not started: the batches added meanwhile go with it. */
  private flushQueued = false;
  /** The flush being pushed (or to be retried first). */
  private current: Flush | undefined;
  private running: Promise<void> | undefined;
  private loaded: Promise<void> | undefined;
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;
  readonly counters: DenseReplicaCounters = {
    flushes: 0,
    refreshesSkipped: 0,
    duplicateFlushes: 0,
    flushFailures: 0,
    pendingBatches: 0,
    refreshes: 0,
  };

  constructor(
    private readonly client: ShardClient,
    spec: ModelSpec,
    private readonly o: DenseReplicaOptions,
    private readonly log: WorkerLog,
  ) {
    this.tables = [];
    spec.tables.forEach((t, i) => {
      if (t.kind !== 'dense') return;
      this.tables.push(i);
      this.opt.set(i, new DenseOptimizer(t));
    });
    this.timer = setInterval(() => this.tick(), Math.max(10, Math.min(250, o.maxDelayMs / 4)));
    this.timer.unref();
  }

  /** Pulls the dense tables once (before the first batch reads them). */
  load(onRetry?: OnRetry): Promise<void> {
    this.loaded ??= this.pullAll(onRetry).then(({ rows, last }) => {
      for (const [t, v] of rows) {
        this.w.set(t, v.slice());
        this.base.set(t, v);
      }
      this.remember(last);
    });
    // a failed load is tried again by the next batch
    this.loaded.catch(() => (this.loaded = undefined));
    return this.loaded;
  }

  /** The replica's current weights of dense table `t` (shared: copy before handing them on). */
  rows(t: number): Float32Array {
    const w = this.w.get(t);
    if (!w) throw new FreshetError('NOT_READY', `dense table ${t} not loaded`);
    return w;
  }

  /**
   * Applies a batch's dense gradients now (throws NON_FINITE_STATE, applying nothing, when the
   * update would make a weight non-finite) and resolves once the flush that carries them to the
   * shard was accepted; rejects when it never will be (the worker stopped first).
   */
  add(
    id: string,
    grads: readonly (Float32Array | undefined)[],
    lrScale: number,
    examples: number,
  ): Promise<void> {
    this.applyLocal(grads, lrScale, examples);
    const done = new Promise<void>((resolve, reject) => {
      this.waiting.push({ id, at: Date.now(), examples, resolve, reject });
    });
    this.counters.pendingBatches = this.waiting.length;
    this.pendingExamples += examples;
    if (this.pendingExamples >= this.o.syncExamples && !this.flushQueued) {
      this.flushQueued = true;
      void this.flush().catch(() => undefined);
    }
    return done;
  }

  /**
   * A recovered batch: what is pending goes first, then this batch's update is flushed on its
   * own, under its own id, so the shard can tell whether its earlier owner had flushed it.
   */
  async addAlone(
    id: string,
    grads: readonly (Float32Array | undefined)[],
    lrScale: number,
    examples: number,
  ): Promise<void> {
    await this.serial(async () => {
      if (this.current) await this.pushCurrent();
      // No await from here to the forms: no other batch's update can slip into this one's delta.
      const pending = this.waiting.length > 0 ? this.form(this.takeWaiting()) : undefined;
      this.counters.pendingBatches = 0;
      this.applyLocal(grads, lrScale, examples);
      const alone = this.form([
        { id, at: Date.now(), examples, resolve: () => undefined, reject: () => undefined },
      ]);
      if (pending) {
        this.current = pending;
        await this.pushCurrent();
      }
      this.current = alone;
      await this.pushCurrent();
    });
  }

  /** Pushes what is pending now (and anything that failed before). */
  flush(): Promise<void> {
    return this.serial(async () => {
      this.flushQueued = false;
      if (!this.current && this.waiting.length > 0) {
        const ws = this.takeWaiting();
        this.counters.pendingBatches = 0;
        this.current = this.form(ws);
      }
      if (this.current) await this.pushCurrent();
    });
  }

  /** A last flush; batches it cannot carry are rejected (their events are handed back). */
  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    try {
      await this.flush();
    } catch (e) {
      this.log('warn', 'last dense flush failed; its batches are handed back', { error: String(e) });
    }
    this.stopped = true;
    const left = [...(this.current?.waiting ?? []), ...this.takeWaiting()];
    this.current = undefined;
    this.counters.pendingBatches = 0;
    const err = new FreshetError('SHUTTING_DOWN', 'worker stopped before the dense update was flushed');
    for (const w of left) w.reject(err);
  }

  private takeWaiting(): Waiting[] {
    this.pendingExamples = 0;
    return this.waiting.splice(0);
  }

  private tick(): void {
    if (this.running || this.stopped) return;
    const first = this.current?.waiting[0] ?? this.waiting[0];
    if (first && Date.now() - first.at >= this.o.maxDelayMs) void this.flush().catch(() => undefined);
  }

  /** Runs `fn` after every earlier flush settled; the caller gets its outcome. */
  private serial(fn: () => Promise<void>): Promise<void> {
    const next = (this.running ?? Promise.resolve()).then(fn);
    const settled = next.then(
      () => undefined,
      () => undefined,
    );
    this.running = settled;
    void settled.then(() => {
      if (this.running === settled) this.running = undefined;
    });
    return next;
  }

  private applyLocal(grads: readonly (Float32Array | undefined)[], lrScale: number, examples: number): void {
    if (this.stopped) throw new FreshetError('SHUTTING_DOWN', 'dense replica stopped');
    // all tables or none: a refused table takes back the ones updated before it
    const applied: number[] = [];
    try {
      for (const t of this.tables) {
        const g = grads[t];
        if (!g) continue;
        this.opt.get(t)!.apply(this.rows(t), g, lrScale, examples);
        applied.push(t);
      }
    } catch (e) {
      for (const t of applied) this.opt.get(t)!.undo(this.rows(t));
      throw e;
    }
  }

  /** Takes the change since the last flush: base moves to w, so later updates start a new one. */
  private form(ws: Waiting[]): Flush {
    const deltas = new Map<number, Float32Array>();
    for (const t of this.tables) {
      const w = this.rows(t);
      const b = this.base.get(t)!;
      const d = new Float32Array(w.length);
      for (let i = 0; i < w.length; i++) d[i] = w[i]! - b[i]!;
      // What the shard will add: the change itself, or its binary16 rounding. The base moves by
      // exactly that, with the shard's own float32 addition (addRows), so where no other worker
      // changed the tensor it is bit for bit the shard's value, and what rounding left out stays
      // in w − base for the next flush (error feedback: nothing is lost, only delayed).
      const added = this.o.halfFlush ? halfPushRoundTrip(d) : d;
      for (let i = 0; i < w.length; i++) b[i] = b[i]! + added[i]!;
      deltas.set(t, d);
    }
    return {
      parts: ws.map((w) => `${w.id}d`),
      deltas,
      examples: ws.reduce((a, w) => a + w.examples, 0),
      waiting: ws,
    };
  }

  private async pushCurrent(): Promise<void> {
    const f = this.current!;
    let mine = true;
    try {
      const out = await this.client.pushDense(f.deltas, {
        parts: f.parts,
        examples: f.examples,
        half: this.o.halfFlush,
      });
      this.counters.flushes++;
      if (out.duplicates > 0) this.counters.duplicateFlushes++;
      // Nobody else changed a tensor since this worker's previous flush: the shard holds exactly
      // the base, and the pull that would bring others' changes back has nothing to bring.
      for (const [t, { id, prev }] of out.tables) {
        if (prev === null || prev !== this.lastSeen.get(t)) mine = false;
        this.lastSeen.set(t, id);
      }
    } catch (e) {
      this.counters.flushFailures++;
      this.log('warn', 'dense flush failed; retrying it as it was', {
        error: String(e),
        batches: f.waiting.length,
      });
      throw e;
    }
    this.current = undefined;
    for (const w of f.waiting) w.resolve();
    if (mine) {
      this.counters.refreshesSkipped++;
      return;
    }
    // The shard now holds this worker's change and every other worker's: rebase on it, keeping
    // what was applied here since the flush was formed. A failed refresh is harmless (the next
    // flush's refresh catches up); the batches are already safe.
    try {
      const { rows, last } = await this.pullAll();
      for (const [t, s] of rows) {
        const w = this.rows(t);
        const b = this.base.get(t)!;
        for (let i = 0; i < w.length; i++) w[i] = s[i]! + (w[i]! - b[i]!);
        b.set(s);
      }
      this.remember(last);
      this.counters.refreshes++;
    } catch (e) {
      this.log('warn', 'dense refresh after a flush failed', { error: String(e) });
    }
  }

  /**
   * The base now is the tensor as of push `last[t]`: a flush whose shard answers that its
   * previous push was that one finds nothing of anyone else's to pull back. A shard that does
   * not say leaves the flush ids to decide (only the second flush on can skip).
   */
  private remember(last: ReadonlyMap<number, string>): void {
    for (const t of this.tables) {
      const id = last.get(t);
      if (id !== undefined) this.lastSeen.set(t, id);
    }
  }

  private async pullAll(
    onRetry?: OnRetry,
  ): Promise<{ rows: Map<number, Float32Array>; last: ReadonlyMap<number, string> }> {
    const plan = this.client.route({ size: 0, sparse: [], denseTables: this.tables });
    const pulled = await this.client.pull(plan, { onRetry });
    const rows = new Map<number, Float32Array>();
    for (const t of this.tables) rows.set(t, pulled.rows[t]!);
    return { rows, last: pulled.denseLast };
  }
}
