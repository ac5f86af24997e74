import type { NatsConnection } from 'nats';
import type { EncodedBatch } from '@freshet/model';
import { requestBytes } from '@freshet/nats';
import {
  decodeSliceRowsReply,
  encodeSliceRows,
  FreshetError,
  shardOfKey,
  subjects,
  type SliceRowsReply,
  type Subjects,
} from '@freshet/protocol';
import type { ParamSource } from './fast-wide-deep.js';
import type { Replica } from './replica.js';

/** A batch's rows gathered from every slice, and what they were read at. */
export interface GatheredRows {
  params: ParamSource;
  /** Per shard: the version of the node whose rows were used (0 for a shard no key fell in). */
  versions: number[];
  /** Emission time of the newest delta among the slices used (ms since epoch; 0: none). */
  newestTs: number;
  /** Other slices asked (one per slice that holds a key of the batch). */
  slicesAsked: number;
}

export interface SlicedRowsOptions {
  cluster: string;
  /** How long another slice has to answer before the request fails (UNAVAILABLE). */
  timeoutMs: number;
  /**
   * Keys in one rows request at most: the requests of one turn beyond it go in more. Default:
   * as many as let the reply's rows fill 3/4 of the server's max_payload.
   */
  maxKeysPerRequest?: number;
}

/** One batch's keys for one slice, waiting for the turn's request to that slice. */
interface Waiting {
  tables: { t: number; keys: number[] }[];
  keys: number;
  resolve: (r: SliceRowsReply) => void;
  reject: (e: unknown) => void;
}

interface Part {
  table: number;
  keys: Uint32Array;
  out: Float32Array;
}

/** A holder of a slice may be busy or stopping: the queue group may pick another the second time. */
const RETRIED = new Set(['OVERLOADED', 'NOT_READY', 'SHUTTING_DOWN', 'TIMEOUT']);

/**
 * The scatter-gather of a sliced node (packages/serving/README.md "Sliced serving"): a batch's keys are
 * split by the slice of their shard; its own slice's rows come from the replica, the others' in
 * one request per slice (answered by any node holding it, a queue group), all sent at once. The
 * scorer then runs on the whole batch here: the MLP needs every field's embedding side by side,
 * so the rows travel, not partial scores.
 */
export class SlicedRows {
  private readonly subj: Subjects;
  private readonly count: number;
  private readonly index: number;
  /** Requests asked a second time (see {@link ask}). */
  retries = 0;
  /** Rows requests sent, and the batches whose keys they carried (coalesced per turn). */
  readonly sent = { requests: 0, batches: 0 };
  private readonly waiting = new Map<number, Waiting[]>();
  private flushScheduled = false;
  /** Floats per row of the widest sparse table: what bounds a reply's rows per key. */
  private readonly widestDim: number;

  constructor(
    private readonly nc: NatsConnection,
    private readonly replica: Replica,
    private readonly o: SlicedRowsOptions,
  ) {
    const sl = replica.slice;
    if (!sl) throw new FreshetError('CONFIG', 'SlicedRows needs a sliced replica');
    this.count = sl.count;
    this.index = sl.index;
    this.subj = subjects(o.cluster);
    this.widestDim = Math.max(1, ...replica.spec.tables.map((t) => (t.kind === 'sparse' ? t.dim : 1)));
  }

  /** One slice's answer; asked once more when the node that got it could not answer. */
  private async ask(slice: number, req: Uint8Array): Promise<SliceRowsReply> {
    const subject = this.subj.sliceRows(this.count, slice);
    const once = async () =>
      decodeSliceRowsReply(await requestBytes(this.nc, subject, req, { timeoutMs: this.o.timeoutMs / 2 }));
    try {
      return await once();
    } catch (e) {
      if (!(e instanceof FreshetError) || !RETRIED.has(e.code)) throw e;
      this.retries++;
      return once();
    }
  }

  /**
   * A batch's keys of one slice. Every batch scored in the same event-loop turn (ranks that
   * arrived in one read of the socket, a burst of HTTP requests) shares one request per slice:
   * under load a node sends far fewer rows requests than it scores ranks.
   */
  private rowsOf(slice: number, tables: Waiting['tables']): Promise<SliceRowsReply> {
    return new Promise((resolve, reject) => {
      const keys = tables.reduce((a, t) => a + t.keys.length / 2, 0);
      const list = this.waiting.get(slice) ?? [];
      this.waiting.set(slice, list);
      list.push({ tables, keys, resolve, reject });
      if (!this.flushScheduled) {
        this.flushScheduled = true;
        setImmediate(() => this.flush());
      }
    });
  }

  /** Keys whose rows (the widest sparse table's) fill 3/4 of a message the server takes. */
  private keysPerReply(): number {
    const payload = this.nc.info?.max_payload ?? 1024 * 1024;
    return Math.max(64, Math.floor((payload * 0.75) / (this.widestDim * 4)));
  }

  private flush(): void {
    this.flushScheduled = false;
    const max = this.o.maxKeysPerRequest ?? this.keysPerReply();
    for (const [slice, list] of this.waiting) {
      let group: Waiting[] = [];
      let keys = 0;
      for (const w of list) {
        if (group.length > 0 && keys + w.keys > max) {
          void this.send(slice, group);
          group = [];
          keys = 0;
        }
        group.push(w);
        keys += w.keys;
      }
      if (group.length > 0) void this.send(slice, group);
    }
    this.waiting.clear();
  }

  /** One request for `group`'s tables, in order; each waiter gets its own tables of the reply. */
  private async send(slice: number, group: Waiting[]): Promise<void> {
    this.sent.requests++;
    this.sent.batches += group.length;
    try {
      const req = encodeSliceRows({
        slice: { index: slice, count: this.count },
        tables: group.flatMap((w) => w.tables.map((t) => ({ t: t.t, keys: Uint32Array.from(t.keys) }))),
      });
      const reply = await this.ask(slice, req);
      const want = group.reduce((a, w) => a + w.tables.length, 0);
      if (reply.tables.length !== want)
        throw new FreshetError(
          'BAD_REQUEST',
          `slice ${slice} answered ${reply.tables.length} tables of ${want}`,
        );
      let at = 0;
      for (const w of group) {
        w.resolve({ ...reply, tables: reply.tables.slice(at, at + w.tables.length) });
        at += w.tables.length;
      }
    } catch (e) {
      for (const w of group) w.reject(e);
    }
  }

  /** Every sparse row the batch reads; rejects (UNAVAILABLE, TIMEOUT, …) when a slice fails. */
  async gather(batch: EncodedBatch): Promise<GatheredRows> {
    const rep = this.replica;
    const nShards = rep.nShards;
    // shards held by no one here stay 0 until their slice answers
    const local = rep.versions();
    const versions = local.slice();
    // per other slice: its parts' keys and where each row goes
    const remote = new Map<number, { tables: { t: number; keys: number[]; at: number[]; part: Part }[] }>();
    const parts: Part[] = [];
    for (const sp of batch.sparse) {
      const spec = rep.spec.tables[sp.table]!;
      const dim = spec.dim;
      const n = sp.keys.length >>> 1;
      const part: Part = { table: sp.table, keys: sp.keys, out: new Float32Array(n * dim) };
      parts.push(part);
      const mine: number[] = [];
      for (let i = 0; i < n; i++) {
        const lo = sp.keys[2 * i]!;
        const hi = sp.keys[2 * i + 1]!;
        const slice = shardOfKey(sp.table, lo, hi, nShards) % this.count;
        if (slice === this.index) {
          mine.push(i);
          continue;
        }
        let r = remote.get(slice);
        if (!r) remote.set(slice, (r = { tables: [] }));
        let tp = r.tables[r.tables.length - 1];
        if (!tp || tp.part !== part) r.tables.push((tp = { t: sp.table, keys: [], at: [], part }));
        tp.keys.push(lo, hi);
        tp.at.push(i);
      }
      if (mine.length === n) rep.gather(sp.table, sp.keys, part.out);
      else {
        const keys = new Uint32Array(2 * mine.length);
        for (let j = 0; j < mine.length; j++) {
          keys[2 * j] = sp.keys[2 * mine[j]!]!;
          keys[2 * j + 1] = sp.keys[2 * mine[j]! + 1]!;
        }
        const rows = new Float32Array(mine.length * dim);
        rep.gather(sp.table, keys, rows);
        for (let j = 0; j < mine.length; j++)
          part.out.set(rows.subarray(j * dim, (j + 1) * dim), mine[j]! * dim);
      }
    }
    let newestTs = rep.newestDeltaTs();
    await Promise.all(
      [...remote].map(async ([slice, r]) => {
        const reply = await this.rowsOf(
          slice,
          r.tables.map((tp) => ({ t: tp.t, keys: tp.keys })),
        );
        r.tables.forEach((tp, j) => {
          const got = reply.tables[j]!;
          const dim = rep.spec.tables[tp.t]!.dim;
          if (got.t !== tp.t || got.dim !== dim || got.values.length !== tp.at.length * dim)
            throw new FreshetError(
              'WRONG_LENGTH',
              `slice ${slice}: table ${got.t} rows do not match the request`,
            );
          for (let k = 0; k < tp.at.length; k++)
            tp.part.out.set(got.values.subarray(k * dim, (k + 1) * dim), tp.at[k]! * dim);
        });
        reply.shards.forEach((s, j) => {
          if (s >= nShards) return;
          // a dense owner's tensors here were read up to denseRefreshMs ago: the older counts
          versions[s] = rep.holdsDenseOnly(s) ? Math.min(local[s]!, reply.versions[j]!) : reply.versions[j]!;
        });
        if (reply.newestTs > newestTs) newestTs = reply.newestTs;
      }),
    );
    return {
      params: {
        rows(table, keys) {
          const p = parts.find((q) => q.table === table && q.keys === keys);
          if (!p)
            throw new FreshetError('INTERNAL', `rows of table ${table} were not gathered for this batch`);
          return p.out;
        },
        dense: (table) => rep.dense(table),
        stamp: (table) => rep.denseStamp(table),
      },
      versions,
      newestTs,
      slicesAsked: remote.size,
    };
  }
}
