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
  /** Requests sent to other slices (one per slice that holds a key of the batch). */
  requests: number;
}

export interface SlicedRowsOptions {
  cluster: string;
  /** How long another slice has to answer before the request fails (UNAVAILABLE). */
  timeoutMs: number;
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
  }

  /** One slice's answer; asked once more when the node that got it could not answer. */
  private async ask(slice: number, req: Uint8Array, signal?: AbortSignal): Promise<SliceRowsReply> {
    const subject = this.subj.sliceRows(this.count, slice);
    const once = async () =>
      decodeSliceRowsReply(
        await requestBytes(this.nc, subject, req, { timeoutMs: this.o.timeoutMs / 2, signal }),
      );
    try {
      return await once();
    } catch (e) {
      if (!(e instanceof FreshetError) || !RETRIED.has(e.code)) throw e;
      this.retries++;
      return once();
    }
  }

  /** Requests asked a second time (see {@link ask}). */
  retries = 0;

  /** Every sparse row the batch reads; rejects (UNAVAILABLE, TIMEOUT, …) when a slice fails. */
  async gather(batch: EncodedBatch, signal?: AbortSignal): Promise<GatheredRows> {
    const rep = this.replica;
    const nShards = rep.nShards;
    // shards held by no one here stay 0 until their slice answers
    const versions = rep.versions();
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
        const req = encodeSliceRows({
          slice: { index: slice, count: this.count },
          tables: r.tables.map((tp) => ({ t: tp.t, keys: Uint32Array.from(tp.keys) })),
        });
        const reply = await this.ask(slice, req, signal);
        if (reply.tables.length !== r.tables.length)
          throw new FreshetError(
            'BAD_REQUEST',
            `slice ${slice} answered ${reply.tables.length} tables of ${r.tables.length}`,
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
          if (s < nShards) versions[s] = reply.versions[j]!;
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
      requests: remote.size,
    };
  }
}
