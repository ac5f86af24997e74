import type { NatsConnection, Subscription } from 'nats';
import {
  decodeDelta,
  decodeFrame,
  decodeHostDelta,
  decodeHostReply,
  decodeHostRequest,
  subjects,
} from '@freshet/protocol';

/**
 * A passive observer of a cluster's parameter-server traffic: it subscribes (on its own
 * connection) to the shards' pull/push subjects and the shard hosts' (host messages count once,
 * with their parts' rows and bytes), to every reply inbox, to the delta subjects and
 * to the feedback and labels subjects events are published on,
 * and times each request from the moment the server hands it out to the moment the reply passes
 * by. That is the time a request spends at the shard (queueing + decode + work + WAL), measured
 * from outside, so the benchmark needs nothing from the roles. It also counts rows and bytes.
 *
 * It costs one extra copy of every message through the bus and this process, so benchmarks report
 * it (`tap: true`) and can turn it off.
 */

/** Quantiles and totals of one kind of message. */
export interface TapSummary {
  count: number;
  bytes: number;
  /** Rows carried (pushes: gradient rows; deltas: value rows + dead keys); 0 when not decoded. */
  rows: number;
  /** Request → reply as seen on the bus (pull, push); delta: emission → tap receipt. */
  p50Ms: number | null;
  p99Ms: number | null;
  meanMs: number | null;
  /** Reply payload bytes (pull, push). */
  replyBytes: number;
  /** Replies that passed by (pull, push). */
  replies: number;
  /**
   * Array payload bytes of dense and of sparse tables, requests and replies together (0 for
   * feedback, and when the tap was not told which tables are dense); the rest of `bytes +
   * replyBytes` is headers and framing.
   */
  denseBytes: number;
  sparseBytes: number;
}

/** What {@link WireTap.summary} returns. */
export interface WireTapReport {
  pull: TapSummary;
  push: TapSummary;
  delta: TapSummary;
  /** Events published to the feedback stream (one message each; JetStream's delivery not seen). */
  feedback: TapSummary;
  /** Probe events carried by deltas (their eventTs). */
  deltaEventTs: number;
  /** Messages the tap could not decode (not an error of the cluster: counted for honesty). */
  undecoded: number;
}

const MAX_SAMPLES = 200_000;

class Series {
  count = 0;
  bytes = 0;
  rows = 0;
  replyBytes = 0;
  replies = 0;
  denseBytes = 0;
  sparseBytes = 0;
  readonly ms: number[] = [];
  add(ms: number | undefined): void {
    if (ms !== undefined && this.ms.length < MAX_SAMPLES) this.ms.push(ms);
  }
  summary(): TapSummary {
    const s = [...this.ms].sort((a, b) => a - b);
    const q = (p: number) => (s.length ? round(s[Math.min(s.length - 1, Math.floor(p * s.length))]!) : null);
    return {
      count: this.count,
      bytes: this.bytes,
      rows: this.rows,
      p50Ms: q(0.5),
      p99Ms: q(0.99),
      meanMs: s.length ? round(s.reduce((a, b) => a + b, 0) / s.length) : null,
      replyBytes: this.replyBytes,
      replies: this.replies,
      denseBytes: this.denseBytes,
      sparseBytes: this.sparseBytes,
    };
  }
}

const round = (x: number) => Math.round(x * 1000) / 1000;

interface Pending {
  t: number;
  series: Series;
  /** A host message's part count (its reply carries as many frames); undefined: one shard's. */
  parts?: number | undefined;
}

/**
 * Adds a frame's array bytes to `s` by table kind. Every ps message carries the same number of
 * arrays per table in table order (pull: keys; reply: values; push and delta: three), so this
 * needs no knowledge of the message type.
 */
function splitByTable(s: Series, data: Uint8Array, dense: ReadonlySet<number> | undefined): void {
  if (!dense) return;
  const f = decodeFrame(data);
  const tables = (f.header as { tables?: Array<{ t?: number }> } | null)?.tables ?? [];
  if (tables.length === 0) return;
  const per = f.arrays.length / tables.length;
  if (!Number.isInteger(per)) return;
  f.arrays.forEach((a, i) => {
    if (dense.has(tables[Math.floor(i / per)]?.t ?? -1)) s.denseBytes += a.byteLength;
    else s.sparseBytes += a.byteLength;
  });
}

/** Subscribes on `nc` (give it a connection of its own: it sees every reply inbox). */
export class WireTap {
  private readonly subs: Subscription[] = [];
  private readonly pending = new Map<string, Pending>();
  private readonly pull = new Series();
  private readonly push = new Series();
  private readonly delta = new Series();
  private readonly feedback = new Series();
  private deltaEventTs = 0;
  private undecoded = 0;
  private sweeper: NodeJS.Timeout | undefined;
  private active = true;

  /**
   * `denseTables`: ids of the model's dense tables, to split bytes by table kind. `feedback`: also
   * count the events published to the stream; off by default, because a replay publishes them
   * faster than the parameter-server traffic, and a tap that falls behind (a slow consumer) would
   * lose pull and push messages with them.
   */
  constructor(
    private readonly nc: NatsConnection,
    cluster: string,
    private readonly denseTables?: ReadonlySet<number>,
    feedback = false,
  ) {
    const s = subjects(cluster);
    const p = s.prefix;
    this.subs.push(
      nc.subscribe(`${p}.ps.*.pull`, {
        callback: (_e, m) => this.request(this.pull, m.reply, m.data, false),
      }),
      nc.subscribe(`${p}.ps.*.push`, {
        callback: (_e, m) => this.request(this.push, m.reply, m.data, true),
      }),
      // host messages (several shards' pulls or pushes in one): one message, its parts' rows
      nc.subscribe(`${p}.psh.*.pull`, {
        callback: (_e, m) => this.request(this.pull, m.reply, m.data, false, true),
      }),
      nc.subscribe(`${p}.psh.*.push`, {
        callback: (_e, m) => this.request(this.push, m.reply, m.data, true, true),
      }),
      // pull and push replies go to the workers' own inboxes
      nc.subscribe(`${s.inboxPrefix('worker')}.>`, {
        callback: (_e, m) => this.reply(m.subject, m.data),
      }),
      nc.subscribe(s.deltaAll, { callback: (_e, m) => this.onDelta(m.data) }),
      nc.subscribe(s.hostDeltaAll, { callback: (_e, m) => this.onHostDelta(m.data) }),
    );
    if (feedback) {
      this.subs.push(
        nc.subscribe(s.feedbackAll, { callback: (_e, m) => this.onFeedback(m.data) }),
        nc.subscribe(s.labelsAll, { callback: (_e, m) => this.onFeedback(m.data) }),
      );
    }
    // Requests whose reply never passed (timeouts, a killed shard) must not pile up.
    this.sweeper = setInterval(() => {
      const old = performance.now() - 30_000;
      for (const [k, v] of this.pending) if (v.t < old) this.pending.delete(k);
    }, 5000);
    this.sweeper.unref();
  }

  private request(
    s: Series,
    reply: string | undefined,
    data: Uint8Array,
    countRows: boolean,
    host = false,
  ): void {
    if (!this.active) return;
    s.count++;
    s.bytes += data.length;
    let parts: number | undefined;
    try {
      const frames = host ? decodeHostRequest(data).parts.map((p) => p.frame) : [data];
      if (host) parts = frames.length;
      for (const f of frames) {
        if (countRows) {
          const h = decodeFrame(f).header as { tables?: Array<{ n?: number }> };
          for (const t of h.tables ?? []) s.rows += t.n ?? 0;
        }
        splitByTable(s, f, this.denseTables);
      }
    } catch {
      this.undecoded++;
    }
    if (reply) this.pending.set(reply, { t: performance.now(), series: s, parts });
  }

  private reply(subject: string, data: Uint8Array): void {
    const p = this.pending.get(subject);
    if (!p) return;
    this.pending.delete(subject);
    p.series.add(performance.now() - p.t);
    p.series.replyBytes += data.length;
    p.series.replies++;
    try {
      const frames = p.parts === undefined ? [data] : decodeHostReply(data, p.parts);
      for (const f of frames) if (f) splitByTable(p.series, f, this.denseTables);
    } catch {
      this.undecoded++;
    }
  }

  private onFeedback(data: Uint8Array): void {
    if (!this.active) return;
    this.feedback.count++;
    this.feedback.bytes += data.length;
    this.feedback.rows++;
  }

  /** One message; its parts' rows, bytes and probe events counted as the shards' own deltas. */
  private onHostDelta(data: Uint8Array): void {
    if (!this.active) return;
    this.delta.count++;
    this.delta.bytes += data.length;
    try {
      for (const p of decodeHostDelta(data)) this.onDelta(p.frame, false);
    } catch {
      this.undecoded++;
    }
  }

  private onDelta(data: Uint8Array, message = true): void {
    if (!this.active) return;
    const s = this.delta;
    if (message) {
      s.count++;
      s.bytes += data.length;
    }
    try {
      const d = decodeDelta(data);
      for (const t of d.tables) s.rows += (t.keys.length + t.deadKeys.length) >>> 1;
      this.deltaEventTs += d.eventTs.length;
      splitByTable(s, data, this.denseTables);
      s.add(Math.max(0, Date.now() - d.ts));
    } catch {
      this.undecoded++;
    }
  }

  /** Totals and quantiles so far. */
  summary(): WireTapReport {
    return {
      pull: this.pull.summary(),
      push: this.push.summary(),
      delta: this.delta.summary(),
      feedback: this.feedback.summary(),
      deltaEventTs: this.deltaEventTs,
      undecoded: this.undecoded,
    };
  }

  /** Stops counting and unsubscribes (the connection stays open: the caller owns it). */
  stop(): void {
    this.active = false;
    if (this.sweeper) clearInterval(this.sweeper);
    for (const s of this.subs) s.unsubscribe();
  }
}
