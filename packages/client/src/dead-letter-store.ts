import {
  AckPolicy,
  DeliverPolicy,
  type JetStreamManager,
  type MsgHdrs,
  type NatsConnection,
  type StoredMsg,
} from 'nats';
import { FreshetError, subjects, type Subjects } from '@freshet/protocol';
import { deadLetterHeaders, fromNatsError } from '@freshet/nats';

/**
 * Reading and acting on a cluster's dead-letter stream (what `freshet dlq` does): list and count
 * by reason, show one, replay after a fix (back onto the subject it came from), purge. Dead
 * letters are never changed in place: a replayed one is deleted once its replay is stored.
 */

/** One stored dead letter. */
export interface StoredDeadLetter {
  seq: number;
  /** When it was stored, ms since the epoch. */
  time: number;
  reason: string;
  message: string;
  sourceSubject: string | undefined;
  sourceSeq: number | undefined;
  /** Original size when the payload was cut (it cannot be replayed then). */
  truncatedFrom: number | undefined;
  data: Uint8Array;
}

export interface DeadLetterFilter {
  /** Only this reason code. */
  reason?: string | undefined;
  /** Only stream sequences in [from, to]. */
  fromSeq?: number | undefined;
  toSeq?: number | undefined;
}

export interface DeadLetterSummary {
  stream: string;
  /** Stored now, and their bytes. */
  messages: number;
  bytes: number;
  firstSeq: number;
  lastSeq: number;
  /** Counts by reason code over what was scanned (all of it unless `scanned < messages`). */
  byReason: Record<string, number>;
  scanned: number;
}

/** The parts of a stored or delivered message a dead letter is read from. */
interface RawDeadLetter {
  seq: number;
  time: number;
  header: MsgHdrs | undefined;
  data: Uint8Array;
}

const fromStored = (m: StoredMsg): StoredDeadLetter =>
  toDeadLetter({ seq: m.seq, time: m.time.getTime(), header: m.header, data: m.data });

function toDeadLetter(m: RawDeadLetter): StoredDeadLetter {
  const h = m.header;
  const num = (name: string) => {
    const v = h?.get(name);
    return v ? Number(v) : undefined;
  };
  return {
    seq: m.seq,
    time: m.time,
    reason: h?.get(deadLetterHeaders.reason) || 'UNKNOWN',
    message: h?.get(deadLetterHeaders.message) ?? '',
    sourceSubject: h?.get(deadLetterHeaders.sourceSubject) || undefined,
    sourceSeq: num(deadLetterHeaders.sourceSeq),
    truncatedFrom: num(deadLetterHeaders.truncated),
    data: m.data,
  };
}

const matches = (d: StoredDeadLetter, f: DeadLetterFilter) =>
  (f.reason === undefined || d.reason === f.reason) &&
  (f.fromSeq === undefined || d.seq >= f.fromSeq) &&
  (f.toSeq === undefined || d.seq <= f.toSeq);

/** The dead-letter stream of one cluster. */
export class DeadLetterStore {
  private readonly s: Subjects;

  private constructor(
    private readonly nc: NatsConnection,
    private readonly jsm: JetStreamManager,
    cluster: string,
  ) {
    this.s = subjects(cluster);
  }

  static async open(nc: NatsConnection, cluster: string): Promise<DeadLetterStore> {
    return new DeadLetterStore(nc, await nc.jetstreamManager(), cluster);
  }

  get stream(): string {
    return this.s.deadLetterStream;
  }

  /**
   * Every dead letter matching `filter`, oldest first, through an ephemeral consumer that reads
   * the stream once (at most `limit`, default 100,000, are visited).
   */
  async *scan(filter: DeadLetterFilter = {}, limit = 100_000): AsyncGenerator<StoredDeadLetter> {
    const info = await this.info();
    if (info.state.messages === 0) return;
    const last =
      filter.toSeq === undefined ? info.state.last_seq : Math.min(filter.toSeq, info.state.last_seq);
    const start = Math.max(filter.fromSeq ?? 1, info.state.first_seq);
    if (start > last) return;
    const ci = await this.jsm.consumers.add(this.stream, {
      ack_policy: AckPolicy.None,
      deliver_policy: DeliverPolicy.StartSequence,
      opt_start_seq: start,
      inactive_threshold: 30_000_000_000,
    });
    const consumer = await this.nc.jetstream().consumers.get(this.stream, ci.name);
    let visited = 0;
    try {
      while (visited < limit) {
        const batch = await consumer.fetch({ max_messages: Math.min(512, limit - visited), expires: 1000 });
        let got = 0;
        let done = false;
        for await (const m of batch) {
          got++;
          visited++;
          // the end of what was stored when the scan began: stop now, not at the fetch's expiry
          if (m.seq >= last || m.info.pending === 0) done = true;
          const d = toDeadLetter({
            seq: m.seq,
            time: Math.floor(m.info.timestampNanos / 1e6),
            header: m.headers,
            data: m.data,
          });
          if (matches(d, filter)) yield d;
          if (done || visited >= limit) break;
        }
        if (done || got === 0) return;
      }
    } finally {
      await this.jsm.consumers.delete(this.stream, ci.name).catch(() => undefined);
    }
  }

  /** Counts by reason and the stream's state. */
  async summary(limit = 100_000): Promise<DeadLetterSummary> {
    const info = await this.info();
    const byReason: Record<string, number> = {};
    let scanned = 0;
    for await (const d of this.scan({}, limit)) {
      scanned++;
      byReason[d.reason] = (byReason[d.reason] ?? 0) + 1;
    }
    return {
      stream: this.stream,
      messages: info.state.messages,
      bytes: info.state.bytes,
      firstSeq: info.state.first_seq,
      lastSeq: info.state.last_seq,
      byReason,
      scanned,
    };
  }

  /** One dead letter by stream sequence; NOT_READY-free: undefined when there is none. */
  async get(seq: number): Promise<StoredDeadLetter | undefined> {
    try {
      return fromStored(await this.jsm.streams.getMessage(this.stream, { seq }));
    } catch (e) {
      if (/no message found|not found/i.test((e as Error).message)) return undefined;
      throw fromNatsError(e, this.stream);
    }
  }

  /**
   * Publishes each matching dead letter again on the feedback or labels subject it came from
   * (JetStream, acked) and deletes it once stored. Skipped (and kept): truncated payloads, and
   * sources that are not a feedback or labels subject of this cluster (a dead letter cannot be
   * used to publish elsewhere). `dryRun` only counts.
   */
  async replay(
    filter: DeadLetterFilter = {},
    opts: { dryRun?: boolean; limit?: number } = {},
  ): Promise<{ replayed: number; skipped: Array<{ seq: number; why: string }> }> {
    const js = this.nc.jetstream();
    const ours = /^freshet\.[^.]+\.(fb|lb)\.\d+$/;
    let replayed = 0;
    const skipped: Array<{ seq: number; why: string }> = [];
    const todo: StoredDeadLetter[] = [];
    for await (const d of this.scan(filter, opts.limit)) todo.push(d);
    for (const d of todo) {
      const src = d.sourceSubject;
      if (d.truncatedFrom !== undefined) {
        skipped.push({ seq: d.seq, why: `payload truncated (was ${d.truncatedFrom} bytes)` });
        continue;
      }
      if (!src || !ours.test(src) || !src.startsWith(`${this.s.prefix}.`)) {
        skipped.push({
          seq: d.seq,
          why: `source ${src ?? '(none)'} is not a feedback or labels subject of this cluster`,
        });
        continue;
      }
      if (opts.dryRun) {
        replayed++;
        continue;
      }
      try {
        // its own dedupe id: a replay interrupted after the publish and repeated is stored once
        await js.publish(src, d.data, { msgID: `dlq-replay:${this.stream}:${d.seq}` });
      } catch (e) {
        throw fromNatsError(e, src);
      }
      await this.jsm.streams.deleteMessage(this.stream, d.seq, false);
      replayed++;
    }
    return { replayed, skipped };
  }

  /**
   * Deletes dead letters: all of them (a stream purge) when the filter is empty, else each match.
   * Returns how many were deleted.
   */
  async purge(filter: DeadLetterFilter = {}, limit?: number): Promise<number> {
    if (filter.reason === undefined && filter.fromSeq === undefined && filter.toSeq === undefined) {
      const r = await this.jsm.streams.purge(this.stream);
      return r.purged;
    }
    const seqs: number[] = [];
    for await (const d of this.scan(filter, limit)) seqs.push(d.seq);
    for (const seq of seqs) await this.jsm.streams.deleteMessage(this.stream, seq, false);
    return seqs.length;
  }

  private async info() {
    try {
      return await this.jsm.streams.info(this.stream);
    } catch (e) {
      if (/not found/i.test((e as Error).message)) {
        throw new FreshetError(
          'NOT_READY',
          `dead-letter stream ${this.stream} not found: is the cluster name right?`,
          {
            cause: e,
          },
        );
      }
      throw fromNatsError(e, this.stream);
    }
  }
}
