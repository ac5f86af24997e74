import { randomBytes } from 'node:crypto';
import {
  FreshetError,
  MAX_ABS_GRADIENT,
  pullWidth,
  pushesState,
  pushWidth,
  shardOfDense,
  shardOfKey,
  type DeltaTable,
  type ErrorCode,
  type ModelSpec,
  type PullReply,
  type PullRequest,
  type PushRequest,
  type SnapshotPage,
  type SnapshotRequest,
  q8Worthwhile,
  type RowEncoding,
} from '@freshet/protocol';
import { ParamTable } from './param-table.js';
import { PushUndo } from './push-undo.js';
import { tickOf } from './row-store.js';
import { DcBackups, scaleFor, stalenessScale, TauHistogram } from './staleness.js';

/** Limits and knobs of the in-memory shard state (no I/O). */
export interface ShardCoreOptions {
  spec: ModelSpec;
  shard: number;
  shards: number;
  /** Reject keys routed to another shard with NOT_OWNER. */
  checkOwnership: boolean;
  maxPushRows: number;
  maxPullKeys: number;
  sketchWidth: number;
  /** Admission counts halve every this many ms (0 or absent: never). */
  sketchDecayMs?: number;
  /** Push ids remembered for idempotent retries. */
  recentPushIds: number;
  chunkRows?: number;
  dcMaxWorkers: number;
  dcMaxRowsPerWorker: number;
}

/** How a push was applied (kept in the log so a replay applies it identically). */
export interface ApplyResult {
  version: number;
  tau: number;
  applied: number;
  /** True when a `dc` table's gradients were compensated: the log keeps the compensated push. */
  dcApplied: boolean;
  /** The push as applied (compensated gradients where `dcApplied`). */
  effective: PushRequest;
  /**
   * For each dense table the push changed: the id of the push that changed it before (the
   * core's start token when none did since it started; null for a table this shard does not
   * own). A dense replica whose previous flush, or whose last pull's `last`, is that id knows
   * the tensor is exactly what it holds as its base.
   */
  densePrev: { t: number; id: string | null }[];
}

export interface ReplayInfo {
  tau: number;
  dcApplied: boolean;
}

/**
 * Throws NON_FINITE or GRAD_OVERFLOW for gradients the optimizers must never see: a NaN or
 * ±Infinity, or a value whose square overflows float32 (the second-moment state would become
 * +Infinity and freeze its row). Checked for the whole push before any of it is applied.
 */
function checkGradients(table: number, a: Float32Array): void {
  // x − x is 0 for finite x and NaN for NaN and ±Infinity; one pass, no branch per value
  let acc = 0;
  let max = 0;
  for (let i = 0; i < a.length; i++) {
    const x = a[i]!;
    acc += x - x;
    const ax = x < 0 ? -x : x;
    if (ax > max) max = ax;
  }
  if (acc !== 0) throw new FreshetError('NON_FINITE', `table ${table}: non-finite gradient`);
  if (max > MAX_ABS_GRADIENT) {
    throw new FreshetError(
      'GRAD_OVERFLOW',
      `table ${table}: gradient ${max.toExponential(2)} > ${MAX_ABS_GRADIENT}`,
    );
  }
}

/**
 * The parameter state of one shard and every rule for changing it: validation, staleness,
 * admission, optimizers, eviction, idempotency, delta bookkeeping. No I/O: the shard actor adds
 * NATS, the log and checkpoints; benchmarks and unit tests drive it directly.
 */
export class ShardCore {
  readonly tables: ParamTable[];
  /** Pushes applied; every pull reply carries it, every push echoes it as `base`. */
  version = 0;
  readonly tau = new TauHistogram();
  readonly rejects = new Map<ErrorCode, number>();
  readonly dc: DcBackups;
  rowUpdates = 0;
  pushes = 0;
  duplicates = 0;
  private readonly recent = new Map<string, number>();
  private eventTs: number[] = [];
  private scratch = new Int32Array(8192);
  /** The rows the current push touched, as they were (reused buffers; see push-undo.ts). */
  private readonly undo = new PushUndo();
  /**
   * Dense table → the id of the last push that changed it (see {@link ApplyResult.densePrev}).
   * Until a push does, a token of this core's start: a replica that pulled the tensor before a
   * restart never mistakes the restored one for what it pulled.
   */
  private readonly denseLastId = new Map<number, string>();

  constructor(readonly o: ShardCoreOptions) {
    this.tables = o.spec.tables.map((t, id) => {
      const owned = t.kind === 'dense' ? shardOfDense(t, o.shards) === o.shard : true;
      return new ParamTable(id, t, owned, o.sketchWidth, o.chunkRows, o.sketchDecayMs);
    });
    this.dc = new DcBackups(o.dcMaxWorkers, 4, o.dcMaxRowsPerWorker);
    const tick = tickOf(Date.now());
    for (const t of this.tables) if (t.dense && t.owned) t.create(0, 0, tick);
    const start = `~start.${randomBytes(8).toString('hex')}`;
    for (const t of this.tables) if (t.dense && t.owned) this.denseLastId.set(t.id, start);
  }

  /** Counts a rejected request by code (the endpoint reports every error reply here). */
  countReject(code: ErrorCode): void {
    this.rejects.set(code, (this.rejects.get(code) ?? 0) + 1);
  }

  /**
   * The version a push id was applied at, when it is a remembered retry. A `+`-joined id (a
   * dense replica's flush of several batches) counts as applied when any of its parts was: a
   * part applied on its own (the batch's recovery by another owner) must not be applied again,
   * so the rest of that flush is given up rather than the part doubled.
   */
  appliedVersion(id: string): number | undefined {
    if (!id.includes('+')) return this.recent.get(id);
    for (const part of id.split('+')) {
      const v = this.recent.get(part);
      if (v !== undefined) return v;
    }
    return undefined;
  }

  private table(t: number): ParamTable {
    const tab = this.tables[t];
    if (!tab) throw new FreshetError('UNKNOWN_TABLE', `table ${t} not in model "${this.o.spec.name}"`);
    return tab;
  }

  private checkKeys(tab: ParamTable, keys: Uint32Array): void {
    if (tab.dense) {
      if (!tab.owned) {
        throw new FreshetError('NOT_OWNER', `dense table ${tab.spec.name} lives on another shard`);
      }
      if (keys.length !== 2) {
        throw new FreshetError(
          'WRONG_LENGTH',
          `dense table ${tab.spec.name}: ${keys.length / 2} keys, expected 1`,
        );
      }
      if (keys[0] !== 0 || keys[1] !== 0) {
        throw new FreshetError('BAD_REQUEST', `dense table ${tab.spec.name}: key must be (0, 0)`);
      }
      return;
    }
    if (!this.o.checkOwnership || this.o.shards === 1) return;
    const { shard, shards } = this.o;
    for (let i = 0; i < keys.length; i += 2) {
      if (shardOfKey(tab.id, keys[i]!, keys[i + 1]!, shards) !== shard) {
        throw new FreshetError('NOT_OWNER', `key ${i / 2} of table ${tab.id} belongs to another shard`);
      }
    }
  }

  /**
   * Checks a whole push before anything of it is applied: tables, dims, keys, sizes, finiteness
   * and the `reject` staleness bound. Throws the first violation's FreshetError.
   */
  validatePush(req: PushRequest, tau = this.tauOf(req.base)): void {
    if (req.add) {
      this.validateAdd(req);
      return;
    }
    let rows = 0;
    for (const p of req.tables) rows += p.keys.length / 2;
    if (rows > this.o.maxPushRows) {
      throw new FreshetError('OVERSIZE', `push of ${rows} rows > limit ${this.o.maxPushRows}`);
    }
    for (const p of req.tables) {
      const tab = this.table(p.t);
      // a sequential-FTRL table takes Δz and Δn per row: twice its dim
      const width = pushWidth(tab.spec);
      if (p.dim !== width) {
        throw new FreshetError('WRONG_LENGTH', `table ${p.t}: dim ${p.dim}, expected ${width}`);
      }
      const n = p.keys.length / 2;
      if (p.grads.length !== n * width || p.counts.length !== n) {
        throw new FreshetError('WRONG_LENGTH', `table ${p.t}: arrays disagree with ${n} keys`);
      }
      this.checkKeys(tab, p.keys);
      checkGradients(p.t, p.grads);
      stalenessScale(tab.spec.staleness, tau);
    }
  }

  /**
   * An additive push carries weight deltas: whole dense tensors (a dense replica's flush), or
   * embedding rows (a warm-start import: `freshet model import`). No staleness bound: a delta
   * is not a gradient of some older weights. FTRL tables are refused: their weights are derived
   * from z and n at every update, so an added delta would be lost at the row's next push.
   */
  private validateAdd(req: PushRequest): void {
    let rows = 0;
    for (const p of req.tables) rows += p.keys.length / 2;
    if (rows > this.o.maxPushRows) {
      throw new FreshetError('OVERSIZE', `push of ${rows} rows > limit ${this.o.maxPushRows}`);
    }
    for (const p of req.tables) {
      const tab = this.table(p.t);
      if (tab.dense) {
        if (p.dim !== tab.spec.dim || p.grads.length !== tab.spec.dim || p.counts.length !== 1) {
          throw new FreshetError(
            'WRONG_LENGTH',
            `table ${p.t}: a weight delta is the whole ${tab.spec.dim}-float tensor`,
          );
        }
      } else {
        if (tab.spec.optimizer.kind === 'ftrl') {
          throw new FreshetError(
            'BAD_REQUEST',
            `table ${p.t} (${tab.spec.name}): FTRL rows take no weight deltas (w follows z and n)`,
          );
        }
        const n = p.keys.length / 2;
        if (p.dim !== tab.spec.dim || p.grads.length !== n * tab.spec.dim || p.counts.length !== n) {
          throw new FreshetError(
            'WRONG_LENGTH',
            `table ${p.t}: a weight delta is ${tab.spec.dim} floats per row, one count per row`,
          );
        }
      }
      this.checkKeys(tab, p.keys);
      checkGradients(p.t, p.grads);
    }
  }

  tauOf(base: number): number {
    return Math.max(0, this.version - base);
  }

  /**
   * Validates and applies a push atomically (all of it or nothing), or replays one from the log
   * with the τ recorded when it was first applied. Returns what to log and reply. Throws
   * NON_FINITE_STATE, with every touched row restored, when the update would leave a weight or
   * optimizer state non-finite.
   */
  applyPush(req: PushRequest, ts: number, replay?: ReplayInfo): ApplyResult {
    const tau = replay ? replay.tau : this.tauOf(req.base);
    if (!replay) this.validatePush(req, tau);
    else for (const p of req.tables) this.table(p.t); // a log from another model spec fails loudly
    const tick = tickOf(ts);
    let applied = 0;
    let dcApplied = replay?.dcApplied ?? false;
    let effective = req;
    const tables = req.tables.map((p) => {
      const tab = this.tables[p.t]!;
      const st = tab.spec.staleness;
      // state and weight deltas are not gradients: DC-ASGD's compensation does not apply to them
      if (!replay && !req.add && st.policy === 'dc' && tau > 0 && !pushesState(tab.spec)) {
        const grads = this.dc.compensate(
          req.worker,
          req.base,
          p.t,
          p.dim,
          p.keys,
          p.grads,
          st.lambda,
          (i, out, at) => tab.readOne(p.keys[2 * i]!, p.keys[2 * i + 1]!, out, at),
        );
        dcApplied = true;
        // the compensated gradients are not binary16 or int8 values: logged as float32
        return { t: p.t, dim: p.dim, keys: p.keys, grads, counts: p.counts };
      }
      return p;
    });
    if (dcApplied && !replay) {
      // the compensation g + λ·g⊙g⊙(w − w_then) can overflow what the push itself did not
      for (const p of tables) checkGradients(p.t, p.grads);
      effective = { ...req, tables };
    }
    // The gradients were checked above; what they do to the state is checked as it is applied
    // (a finite gradient can still overflow float32 state), and any throw takes back every row
    // of the push: it is applied whole or not at all, and a rejected push is never logged.
    const undo = this.undo;
    undo.reset();
    try {
      for (const p of tables) {
        const tab = this.tables[p.t]!;
        const n = p.keys.length / 2;
        if (this.scratch.length < n) this.scratch = new Int32Array(n * 2);

        if (req.add) {
          applied += tab.push(p.keys, p.counts, p.grads, tick, 1, this.scratch, 1, undo, true);
          continue;
        }
        const staleScale = replay ? this.replayScale(tab, tau) : stalenessScale(tab.spec.staleness, tau);
        const lrScale = staleScale * (req.lrScale ?? 1);
        applied += tab.push(p.keys, p.counts, p.grads, tick, lrScale, this.scratch, req.examples ?? 1, undo);
      }
    } catch (e) {
      undo.rollback(this.tables);
      throw e;
    }
    this.version++;
    this.pushes++;
    this.rowUpdates += applied;
    this.tau.record(tau);
    this.remember(req.id, this.version);
    if (req.eventTs !== undefined && this.eventTs.length < 1024) this.eventTs.push(req.eventTs);
    const densePrev: ApplyResult['densePrev'] = [];
    for (const p of req.tables) {
      if (!this.tables[p.t]!.dense) continue;
      densePrev.push({ t: p.t, id: this.denseLastId.get(p.t) ?? null });
      this.denseLastId.set(p.t, req.id);
    }
    return { version: this.version, tau, applied, dcApplied, effective, densePrev };
  }

  /** Replays use the logged τ; `reject` never throws on replay (the push was accepted once). */
  private replayScale(tab: ParamTable, tau: number): number {
    return tab.spec.staleness.policy === 'scale' ? scaleFor(tab.spec.staleness, tau) : 1;
  }

  private remember(id: string, version: number): void {
    if (id.includes('+')) {
      for (const part of id.split('+')) this.remember(part, version);
      return;
    }
    this.recent.set(id, version);
    if (this.recent.size > this.o.recentPushIds) {
      const first = this.recent.keys().next().value;
      if (first !== undefined) this.recent.delete(first);
    }
  }

  /** Recent push ids, oldest first (for checkpoints). */
  recentIds(): [string, number][] {
    return [...this.recent];
  }
  restoreRecent(ids: [string, number][]): void {
    for (const [id, v] of ids) this.remember(id, v);
  }

  /** Reads rows for a pull; missing rows read as their deterministic initial values. */
  pull(req: PullRequest): PullReply {
    let keys = 0;
    for (const t of req.tables) keys += t.keys.length / 2;
    if (keys > this.o.maxPullKeys)
      throw new FreshetError('OVERSIZE', `pull of ${keys} keys > ${this.o.maxPullKeys}`);
    for (const t of req.tables) this.checkKeys(this.table(t.t), t.keys);
    const version = this.version;
    return {
      version,
      tables: req.tables.map((t) => {
        const tab = this.tables[t.t]!;
        const width = pullWidth(tab.spec, req.state === true);
        const values = new Float32Array((t.keys.length / 2) * width);
        tab.read(t.keys, values, req.state === true);
        if (tab.spec.staleness.policy === 'dc' && req.worker && width === tab.dim) {
          this.dc.remember(req.worker, version, t.t, tab.dim, t.keys, values);
        }
        // embedding rows may travel as binary16; dense tensors and FTRL state (n grows past
        // 65504) never do
        const rows = !tab.dense && width === tab.dim;
        const q8 = req.q8 === true && rows && q8Worthwhile(width);
        const half = (req.half === true || req.q8 === true) && rows && !q8;
        const last = tab.dense ? this.denseLastId.get(t.t) : undefined;
        return { t: t.t, dim: width, values, half, q8, last };
      }),
    };
  }

  /** One page of a table, in row order from `cursor` (a row id). */
  snapshot(req: SnapshotRequest, seq: number): SnapshotPage {
    const tab = this.table(req.t);
    const s = tab.store;
    const dim = tab.dim;
    // no more than the rows left: a dense table is one row of up to ~10^5 values, and a page
    // sized by the request's limit (8192 rows by default) would be gigabytes to zero-fill
    const cap = Math.max(0, Math.min(req.limit, s.end - req.cursor));
    const keys = new Uint32Array(cap * 2);
    const values = new Float32Array(cap * dim);
    let n = 0;
    let r = req.cursor;
    for (; r < s.end && n < req.limit; r++) {
      if (!s.isLive(r)) continue;
      keys[2 * n] = s.keyLo(r);
      keys[2 * n + 1] = s.keyHi(r);
      const o = s.valueOffset(r);
      values.set(s.chunkF(r).subarray(o, o + dim), n * dim);
      n++;
    }
    return {
      t: req.t,
      dim,
      version: this.version,
      seq,
      next: r < s.end ? r : null,
      keys: keys.slice(0, 2 * n),
      values: values.slice(0, n * dim),
    };
  }

  /** Keys of rows past their ttl, scanning at most `budget` rows per table (not yet removed). */
  expired(nowMs: number, budget: number): { t: number; keys: Uint32Array }[] {
    const tick = tickOf(nowMs);
    const out: { t: number; keys: Uint32Array }[] = [];
    for (const tab of this.tables) {
      const keys = tab.expired(tick, budget);
      if (keys.length > 0) out.push({ t: tab.id, keys });
    }
    return out;
  }

  /** Removes rows (eviction, or its replay); their tombstones go out with the next delta. */
  evict(t: number, keys: Uint32Array): number {
    return this.table(t).removeKeys(keys);
  }

  get evictions(): number {
    let n = 0;
    for (const t of this.tables) n += t.evicted;
    return n;
  }

  /** True when a delta has something to say. */
  hasChanges(): boolean {
    return this.tables.some((t) => t.pendingDirty > 0 || t.pendingDead > 0) || this.eventTs.length > 0;
  }

  /** Changed rows and tombstones, at most about `maxBytes` of values; the rest stays pending. */
  takeDelta(maxBytes: number, rowEncoding: RowEncoding = 'f32'): { tables: DeltaTable[]; eventTs: number[] } {
    const tables: DeltaTable[] = [];
    let budget = maxBytes;
    for (const tab of this.tables) {
      if (tab.pendingDirty === 0 && tab.pendingDead === 0) continue;
      // Values only, so no rounding accumulates: embedding rows as binary16 or int8; dense
      // tensors as binary16 with int8 rows (one scale for a whole tensor would be too coarse),
      // float32 with binary16 rows (halfDeltas predates this and promised float32 tensors).
      const q8 = rowEncoding === 'q8' && !tab.dense && q8Worthwhile(tab.dim);
      const half = !q8 && (tab.dense ? rowEncoding === 'q8' : rowEncoding !== 'f32');
      const rowBytes = (q8 ? tab.dim + 2 : tab.dim * (half ? 2 : 4)) + 8;
      const maxRows = Math.max(tables.length === 0 ? 1 : 0, Math.floor(budget / rowBytes));
      if (maxRows === 0 && tab.pendingDead === 0) break;
      const c = tab.takeChanges(maxRows);
      budget -= (c.keys.length / 2) * rowBytes + c.deadKeys.length * 4;
      if (c.keys.length > 0 || c.deadKeys.length > 0)
        tables.push({ t: tab.id, dim: tab.dim, ...c, half, q8 });
      if (budget <= 0) break;
    }
    const eventTs = this.eventTs;
    this.eventTs = [];
    return { tables, eventTs };
  }

  /** Bytes held by tables (slabs, indexes, sketches, delta bookkeeping) and DC backups. */
  get bytes(): number {
    let b = this.dc.bytes + this.undo.bytes;
    for (const t of this.tables) b += t.bytes;
    return b;
  }
  get rows(): number {
    let n = 0;
    for (const t of this.tables) n += t.store.size;
    return n;
  }
}
