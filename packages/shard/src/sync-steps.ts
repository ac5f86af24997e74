import {
  FreshetError,
  pushesState,
  type ModelSpec,
  type PushRequest,
  type PushTable,
} from '@freshet/protocol';

/** Push ids are `+`-joined in a step's record; the protocol's id limit bounds how many fit. */
const MAX_STEP_ID_CHARS = 4096;

/** True when the model trains in synchronous steps (every table's policy is `sync`). */
export function isSyncModel(spec: ModelSpec): boolean {
  const sync = spec.tables.filter((t) => t.staleness.policy === 'sync').length;
  if (sync === 0) return false;
  if (sync !== spec.tables.length) {
    throw new FreshetError(
      'CONFIG',
      `model "${spec.name}": the staleness policy sync is for every table or none (${sync} of ${spec.tables.length})`,
    );
  }
  if (spec.tables.some(pushesState)) {
    throw new FreshetError(
      'CONFIG',
      `model "${spec.name}": sync steps take gradients, not sequential FTRL state`,
    );
  }
  return true;
}

/**
 * Row numbers of key pairs [lo, hi] in first-seen order. A key is 64 bits, more than a number
 * holds exactly, and a string per key was the step's main cost: rows are found by `lo` and
 * checked against `hi`, with a string map only for the rare keys that share a `lo`.
 */
class RowIndex {
  private readonly byLo = new Map<number, number>();
  private readonly sharedLo = new Map<string, number>();

  /** The row of (lo, hi), appended to `keys` (pairs) when new. */
  rowOf(lo: number, hi: number, keys: number[]): number {
    const j = this.byLo.get(lo);
    if (j !== undefined && keys[2 * j + 1] === hi) return j;
    const next = keys.length / 2;
    if (j === undefined) this.byLo.set(lo, next);
    else {
      const k = `${lo}:${hi}`;
      const s = this.sharedLo.get(k);
      if (s !== undefined) return s;
      this.sharedLo.set(k, next);
    }
    keys.push(lo, hi);
    return next;
  }
}

/**
 * One push equal to a step's pushes together: the gradients of a batch of Σ nᵢ examples, where
 * push i is the mean-loss gradient over its nᵢ examples (`examples`). Rows are the union of the
 * pushes' keys (first seen first), a row's gradient Σ (nᵢ/N)·gᵢ summed in float64 in push order,
 * its count the sum of counts; dense tensors (key 0,0) alike. An empty push (a worker whose batch
 * has no row here) still adds its examples to N: the single learner averages over all of them.
 * The id is the pushes' ids joined by `+`, so each one is remembered as applied.
 */
export function combineStep(reqs: readonly PushRequest[]): PushRequest {
  if (reqs.length === 0) throw new FreshetError('BAD_REQUEST', 'a step of no pushes');
  let total = 0;
  let lr = 0;
  let eventTs: number | undefined;
  for (const r of reqs) {
    const n = r.examples ?? 1;
    total += n;
    lr += n * (r.lrScale ?? 1);
    if (r.eventTs !== undefined) eventTs = Math.min(eventTs ?? r.eventTs, r.eventTs);
  }
  // table id → its rows: key → row index, in first-seen order
  const byTable = new Map<number, { dim: number; index: RowIndex; keys: number[] }>();
  const rowOf: Int32Array[][] = reqs.map((r) =>
    r.tables.map((p) => {
      let tab = byTable.get(p.t);
      if (!tab) byTable.set(p.t, (tab = { dim: p.dim, index: new RowIndex(), keys: [] }));
      if (tab.dim !== p.dim) {
        throw new FreshetError('WRONG_LENGTH', `table ${p.t}: dims ${tab.dim} and ${p.dim} in one step`);
      }
      const n = p.keys.length / 2;
      const rows = new Int32Array(n);
      for (let i = 0; i < n; i++) rows[i] = tab.index.rowOf(p.keys[2 * i]!, p.keys[2 * i + 1]!, tab.keys);
      return rows;
    }),
  );
  const acc = new Map<number, { sum: Float64Array; counts: Uint32Array }>();
  for (const [t, tab] of byTable) {
    const n = tab.keys.length / 2;
    acc.set(t, { sum: new Float64Array(n * tab.dim), counts: new Uint32Array(n) });
  }
  reqs.forEach((r, k) => {
    const w = (r.examples ?? 1) / total;
    r.tables.forEach((p, q) => {
      const { sum, counts } = acc.get(p.t)!;
      const rows = rowOf[k]![q]!;
      const d = p.dim;
      for (let i = 0; i < rows.length; i++) {
        const j = rows[i]!;
        counts[j] = counts[j]! + (p.counts[i] ?? 1);
        for (let c = 0; c < d; c++) sum[j * d + c]! += w * p.grads[i * d + c]!;
      }
    });
  });
  const tables: PushTable[] = [];
  for (const [t, tab] of byTable) {
    const { sum, counts } = acc.get(t)!;
    tables.push({ t, dim: tab.dim, keys: Uint32Array.from(tab.keys), grads: Float32Array.from(sum), counts });
  }
  let base = Infinity;
  let clock = 0;
  for (const r of reqs) {
    base = Math.min(base, r.base);
    clock = Math.max(clock, r.clock);
  }
  const id = reqs.map((r) => r.id).join('+');
  if (id.length > MAX_STEP_ID_CHARS) {
    throw new FreshetError(
      'OVERSIZE',
      `a step of ${reqs.length} pushes: ids longer than ${MAX_STEP_ID_CHARS}`,
    );
  }
  return {
    id,
    worker: 'sync',
    clock,
    base,
    eventTs,
    lrScale: lr / total,
    examples: total,
    tables,
  };
}

/** What each push of a step is answered with. */
export interface StepReply {
  version: number;
  staleness: number;
  applied: number;
}

interface Joined {
  req: PushRequest;
  resolve: (r: StepReply) => void;
  reject: (e: unknown) => void;
}

interface OpenStep {
  pushes: Joined[];
  workers: Set<string>;
  timer: NodeJS.Timeout;
}

/**
 * The steps of the `sync` policy at one shard. A push joins the open step (opening one); the step
 * closes once every worker of the previous step has pushed into it, or `timeoutMs` after it
 * opened (counted in {@link timeouts}: a worker died, stopped or ran out of events; it is no
 * longer waited for). A closed step is handed to `apply` as one list, which applies the pushes
 * as one optimizer step, logs it and answers every push only then. The workers of a closed step
 * are the next step's members: a new worker's first push joins whatever step is open, and the
 * step after waits for it too. The first step (no members yet: the shard just started) waits the
 * whole timeout, not counted, so the workers' first pushes meet in one step.
 *
 * Every worker waits for its answer before its next pull, so the members pull the same version
 * and their next pushes meet in one step; a push computed on an older version (a worker joining
 * or back after a timeout) joins the open step as it is, its τ reported.
 */
export class SyncSteps {
  steps = 0;
  pushes = 0;
  timeouts = 0;
  private members = new Set<string>();
  private open: OpenStep | undefined;
  /** Ids in the open step: a retry waits for the step instead of joining it twice. */
  private readonly openIds = new Map<string, Promise<StepReply>>();

  constructor(
    private readonly timeoutMs: number,
    private readonly apply: (reqs: PushRequest[]) => Promise<StepReply[]>,
  ) {}

  /** Workers the next step waits for. */
  get memberCount(): number {
    return this.members.size;
  }

  /** The answer a push already in the open step will get (a retry of it waits for that). */
  pending(id: string): Promise<StepReply> | undefined {
    return this.openIds.get(id);
  }

  /** Adds a validated push to the open step; resolves once its step is applied and logged. */
  join(req: PushRequest): Promise<StepReply> {
    let step = this.open;
    if (!step) {
      const timer = setTimeout(() => {
        if (this.members.size > 0) this.timeouts++;
        this.close();
      }, this.timeoutMs);
      step = this.open = { pushes: [], workers: new Set(), timer };
    }
    const p = new Promise<StepReply>((resolve, reject) => step.pushes.push({ req, resolve, reject }));
    this.openIds.set(req.id, p);
    step.workers.add(req.worker);
    let all = this.members.size > 0;
    for (const w of this.members) if (!step.workers.has(w)) all = false;
    if (all) this.close();
    return p;
  }

  private close(): void {
    const step = this.open;
    if (!step) return;
    clearTimeout(step.timer);
    this.open = undefined;
    this.members = step.workers;
    for (const j of step.pushes) this.openIds.delete(j.req.id);
    let done: Promise<StepReply[]>;
    try {
      done = this.apply(step.pushes.map((j) => j.req));
      // counted once applied (a refused step, e.g. NON_FINITE_STATE, changed nothing)
      this.steps++;
      this.pushes += step.pushes.length;
    } catch (e) {
      done = Promise.reject(e instanceof Error ? e : new FreshetError('INTERNAL', String(e)));
    }
    done.then(
      (replies) => step.pushes.forEach((j, i) => j.resolve(replies[i]!)),
      (e: unknown) => step.pushes.forEach((j) => j.reject(e)),
    );
  }

  /** Fails the open step's pushes (shutdown): none of them was applied. */
  stop(): void {
    const step = this.open;
    if (!step) return;
    clearTimeout(step.timer);
    this.open = undefined;
    for (const j of step.pushes) {
      this.openIds.delete(j.req.id);
      j.reject(new FreshetError('SHUTTING_DOWN', 'shard stopping; the step was not applied'));
    }
  }
}
