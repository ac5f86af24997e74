import type { KV, KvEntry, NatsConnection, QueuedIterator } from 'nats';
import { placementKey, placementSchema, requestBytes } from '@freshet/nats';
import {
  decodeHostReply,
  encodeHostRequest,
  FreshetError,
  MAX_HOST_PARTS,
  subjects,
  type HostPartKind,
} from '@freshet/protocol';

/** The longest a host message waits for more parts (`lingerMs`, and the adaptive linger). */
export const MAX_LINGER_MS = 250;

/**
 * The linger that keeps each shard host under `hostMsgsPerS` host messages a second from
 * `workers` busy workers (worker option `hostRouting.hostMsgsPerS`): a worker's window sends at
 * most one pull and one push message to each host, and a busy worker opens one window after
 * another, so the cluster sends each host 2 × workers messages per window length. As the
 * shards' delta interval grows with the shards to bound a serving node's messages, this grows
 * with the workers to bound a host's: more batches share each message, each waits longer.
 */
export function adaptiveLingerMs(workers: number, hostMsgsPerS: number, floorMs = 0): number {
  return Math.min(MAX_LINGER_MS, Math.max(floorMs, (2000 * Math.max(1, workers)) / hostMsgsPerS));
}

export interface HostRouterOptions {
  cluster: string;
  timeoutMs: number;
  /** Largest host message (bytes of the parts); capped by the server's max_payload. */
  maxMessageBytes: number;
  /** After a host message fails, that host's requests go to each shard directly for this long. */
  cooldownMs: number;
  /**
   * How long a host message waits for more parts (of batches sent soon after) before it goes;
   * 0: only the requests issued in the same turn of the event loop travel together.
   */
  lingerMs?: number | undefined;
  /**
   * The linger of each window, asked as it opens (the worker's adaptive `hostMsgsPerS`); takes
   * the place of `lingerMs`.
   */
  linger?: (() => number) | undefined;
  signal?: AbortSignal | undefined;
  log?: (level: 'info' | 'warn', msg: string, fields?: Record<string, unknown>) => void;
}

interface Part {
  shard: number;
  frame: Uint8Array;
  resolve: (reply: Uint8Array) => void;
  reject: (e: unknown) => void;
}
interface Queue {
  host: string;
  op: HostPartKind;
  parts: Part[];
  bytes: number;
}

/**
 * Sends a worker's pulls and pushes so that a batch fans out to shard hosts, not shards
 * (docs/architecture.md, "Host routing"). It follows the cluster's shard placement in KV; the
 * requests issued in one turn of the event loop (one batch's parts, and those of other batches
 * sent at the same moment) that go to shards of one host travel as one host message, pulls and
 * pushes apart. Everything else goes to the shard's own subject, as before: a shard with no
 * placement (standalone shard processes), a host with one part, a part the host says it does not
 * run (a shard on the move), and every request to a host whose last host message failed (no
 * responders: an older host; a timeout), for `cooldownMs`. Each part gets its shard's own reply
 * bytes, so callers decode, retry and deduplicate exactly as for a direct request.
 *
 * Order: a host's parts leave in the order they were issued (a pull issued after a push to the
 * same host never overtakes it: kinds alternate in separate messages, sent in order; a host with
 * shard threads may answer two messages on different threads, in either order). With
 * `lingerMs` the messages wait that long for the parts of batches sent soon after: fewer, larger
 * messages for a little latency. A lingering window keeps one pull and one push message per host
 * (a worker with batches in flight interleaves pulls and pushes: alternating messages would share
 * nothing) and sends the pushes first: a pull still never overtakes a push issued before it, and
 * a push may overtake a pull of the same window, which then reads the rows it changed.
 */
export class HostRouter {
  private readonly subj;
  private hosts: readonly string[] = [];
  private readonly cool = new Map<string, number>();
  private queues: Queue[] = [];
  /** The queue parts for a host (and kind, when lingering) join now. */
  private readonly lastOf = new Map<string, Queue>();
  /** Hosts with parts waiting in `queues`. */
  private readonly waiting = new Set<string>();
  private scheduled = false;
  /** The open window's linger (ms; 0: this turn only). */
  private windowMs = 0;
  private watch: QueuedIterator<KvEntry> | undefined;
  private watching: Promise<void> | undefined;
  /**
   * Host messages and their parts, requests sent directly, parts a host did not run, failed host
   * messages; the last window's linger.
   */
  readonly stats = { hostMessages: 0, hostParts: 0, direct: 0, notHere: 0, hostFailures: 0, lingerMs: 0 };

  constructor(
    private readonly nc: NatsConnection,
    private readonly o: HostRouterOptions,
  ) {
    this.subj = subjects(o.cluster);
  }

  /** Follows the placement in `kv` (the cluster's bucket) until {@link stop}. */
  async start(kv: KV): Promise<void> {
    // the current placement first, then every change
    this.watch = await kv.watch({ key: placementKey });
    const w = this.watch;
    this.watching = (async () => {
      for await (const e of w) {
        if (e.operation !== 'PUT' || e.value.length === 0) {
          this.hosts = [];
          continue;
        }
        const p = placementSchema.safeParse(safeJson(e.string()));
        if (!p.success) {
          this.o.log?.('warn', 'shard placement unreadable: requests go to each shard directly', {
            error: p.error.issues[0]?.message,
          });
          this.hosts = [];
          continue;
        }
        this.hosts = p.data.hosts;
      }
    })().catch((e: unknown) => {
      this.hosts = [];
      this.o.log?.('warn', 'shard placement watch ended: requests go to each shard directly', {
        error: (e as Error).message,
      });
    });
  }

  async stop(): Promise<void> {
    this.watch?.stop();
    await this.watching;
  }

  /** The host of `shard` to route through now, or undefined (direct). */
  hostOf(shard: number): string | undefined {
    const host = this.hosts[shard];
    if (host === undefined) return undefined;
    const until = this.cool.get(host);
    if (until !== undefined) {
      if (Date.now() < until) return undefined;
      this.cool.delete(host);
    }
    return host;
  }

  /** One pull or push frame for `shard`; resolves with the shard's reply frame (maybe an error envelope). */
  request(op: HostPartKind, shard: number, frame: Uint8Array): Promise<Uint8Array> {
    const placed = this.hosts[shard];
    // behind the parts already waiting for its host, whatever befell the host meanwhile: a
    // request never overtakes one issued before it to the same shard
    const host = placed !== undefined && this.waiting.has(placed) ? placed : this.hostOf(shard);
    if (host === undefined) return this.direct(op, shard, frame);
    if (!this.scheduled) {
      this.scheduled = true;
      this.windowMs = Math.min(MAX_LINGER_MS, Math.max(0, this.o.linger?.() ?? this.o.lingerMs ?? 0));
      this.stats.lingerMs = this.windowMs;
      if (this.windowMs > 0) setTimeout(() => this.flush(), this.windowMs);
      else queueMicrotask(() => this.flush());
    }
    return new Promise((resolve, reject) => {
      const key = this.windowMs > 0 ? `${host}\u0000${op}` : host;
      let q = this.lastOf.get(key);
      const cap = Math.min(this.o.maxMessageBytes, (this.nc.info?.max_payload ?? Infinity) - 4096);
      if (!q || q.op !== op || q.bytes + frame.byteLength > cap || q.parts.length >= MAX_HOST_PARTS) {
        q = { host, op, parts: [], bytes: 0 };
        this.queues.push(q);
        this.lastOf.set(key, q);
        this.waiting.add(host);
      }
      q.parts.push({ shard, frame, resolve, reject });
      q.bytes += frame.byteLength;
    });
  }

  private direct(op: HostPartKind, shard: number, frame: Uint8Array): Promise<Uint8Array> {
    this.stats.direct++;
    const subject = op === 'pull' ? this.subj.pull(shard) : this.subj.push(shard);
    return requestBytes(this.nc, subject, frame, { timeoutMs: this.o.timeoutMs, signal: this.o.signal });
  }

  private flush(): void {
    // lingering: pushes first (stable: each kind in the order its messages were begun)
    const queues =
      this.windowMs > 0
        ? [...this.queues.filter((q) => q.op === 'push'), ...this.queues.filter((q) => q.op === 'pull')]
        : this.queues;
    this.queues = [];
    this.lastOf.clear();
    this.waiting.clear();
    this.scheduled = false;
    for (const q of queues) {
      // a lone part, or a host that failed while these waited (lingerMs): each to its shard
      if (q.parts.length === 1 || this.hostOf(q.parts[0]!.shard) !== q.host) {
        for (const p of q.parts) this.direct(q.op, p.shard, p.frame).then(p.resolve, p.reject);
      } else this.send(q);
    }
  }

  private send(q: Queue): void {
    this.stats.hostMessages++;
    this.stats.hostParts += q.parts.length;
    const subject = q.op === 'pull' ? this.subj.hostPull(q.host) : this.subj.hostPush(q.host);
    let payload: Uint8Array;
    try {
      payload = encodeHostRequest({ op: q.op, parts: q.parts });
    } catch (e) {
      for (const p of q.parts) p.reject(e);
      return;
    }
    requestBytes(this.nc, subject, payload, { timeoutMs: this.o.timeoutMs, signal: this.o.signal }).then(
      (data) => {
        let replies;
        try {
          replies = decodeHostReply(data, q.parts.length);
        } catch (e) {
          this.failed(q, e);
          return;
        }
        replies.forEach((r, i) => {
          const p = q.parts[i]!;
          if (r) p.resolve(r);
          else {
            // not running there (moving, starting): its own subject reaches it wherever it is
            this.stats.notHere++;
            this.direct(q.op, p.shard, p.frame).then(p.resolve, p.reject);
          }
        });
      },
      (e: unknown) => this.failed(q, e),
    );
  }

  /**
   * A host message that got no reply: the host's requests go direct for a while. Nobody
   * listening (a host of an older version, or none) means nothing was delivered: its parts go
   * direct at once. Anything else (a timeout: the host may have applied a push) is the parts'
   * error, and the callers' retries, direct now, are deduplicated by the shards as always.
   */
  private failed(q: Queue, e: unknown): void {
    this.stats.hostFailures++;
    if (!this.cool.has(q.host)) {
      this.o.log?.('warn', `host messages to ${q.host} failed: its shards are asked directly for a while`, {
        host: q.host,
        error: (e as Error).message,
        cooldownMs: this.o.cooldownMs,
      });
    }
    this.cool.set(q.host, Date.now() + this.o.cooldownMs);
    const noResponders =
      e instanceof FreshetError && e.code === 'UNAVAILABLE' && /no responders/.test(e.message);
    for (const p of q.parts) {
      if (noResponders) this.direct(q.op, p.shard, p.frame).then(p.resolve, p.reject);
      else p.reject(e);
    }
  }
}

function safeJson(s: string): unknown {
  try {
    return JSON.parse(s);
  } catch {
    return undefined;
  }
}
