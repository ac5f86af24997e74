import { MessageChannel, Worker, type TransferListItem } from 'node:worker_threads';
import type { EventLoopUtilization } from 'node:perf_hooks';
import { threadEntry, type ActorLog } from '@freshet/nats';
import { FreshetError, type ErrorEnvelope, type HostPartKind } from '@freshet/protocol';
import type { Tickable } from './delta-publisher.js';
import type { HostDeltas } from './host-deltas.js';
import type { ShardOptionsInput } from './shard-options.js';
import { PartCalls, partTag, type HandOffs, type RoutedReply } from './part-calls.js';
import { unpackFrames } from './port-batch.js';
import type { Command, ThreadData, ToMain, ToThread } from './shard-thread-messages.js';
import { ThreadShard, type ShardThreadLink } from './thread-shard.js';

/** Where the compiled thread body lives (tests run src/ through vitest; threads need dist/). */
const threadFile = () => threadEntry(import.meta.url, 'shard-thread.js', '@freshet/shard');

type Pending = { resolve(v: unknown): void; reject(e: Error): void };

/** What a shard thread asks of the set it belongs to (ShardThreads). */
interface ThreadSet {
  /** It is running (again): its ports to the other threads, the routes so far. */
  ready(t: ShardThread): void;
  /** Every thread learns that `thread` runs `shard` (their host endpoints hand its parts there). */
  route(shard: number, thread: number): Promise<void>;
}

/** One shard thread: its worker, the commands and host-message parts it has not answered yet. */
class ShardThread implements ShardThreadLink {
  private worker: Worker | undefined;
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private readonly calls = new PartCalls((parts) =>
    this.worker?.postMessage({ op: 'calls', parts } satisfies ToThread, [
      parts.meta.buffer,
      parts.data.buffer,
    ]),
  );
  readonly shards = new Map<number, ThreadShard>();
  /** Host messages answered by its earlier runs (each run's thread counts from 0). */
  private earlierHostMessages = 0;
  /** This run's count, as of its last status report. */
  private reportedHostMessages = 0;
  private starting: Promise<void> | undefined;
  /** Host deltas: a stand-in per shard of this thread that the host's ticks reach. */
  private readonly tickables = new Map<number, Tickable>();
  /** The host's tick being gathered this turn (one post per thread per tick), and those posted. */
  private gathering: { shards: number[]; done: Promise<void>; resolve(): void } | undefined;
  private readonly ticks = new Map<number, () => void>();

  constructor(
    readonly data: ThreadData,
    private readonly log: ActorLog,
    private readonly hostDeltas: HostDeltas | undefined,
    private readonly set: ThreadSet,
  ) {}

  /** Host messages its endpoints answered, every run (what a run answered after its last report is not counted). */
  get hostMessages(): number {
    return this.earlierHostMessages + this.reportedHostMessages;
  }

  get alive(): boolean {
    return this.worker !== undefined;
  }

  /** Started and connected (it may be given ports and routes). */
  get ready(): boolean {
    return this.worker !== undefined && this.starting === undefined;
  }

  /** A message with no reply (a port handed over, routes). */
  post(m: ToThread, transfer: readonly TransferListItem[] = []): void {
    this.worker?.postMessage(m, transfer);
  }

  /** Its event loop's busy and idle time so far (undefined: not running). */
  eventLoopUtilization(): EventLoopUtilization | undefined {
    return this.worker?.performance.eventLoopUtilization();
  }

  announce(shard: number): Promise<void> {
    return this.set.route(shard, this.data.thread);
  }

  /** Starts the thread (again, after it died) and connects it. */
  ensure(): Promise<void> {
    if (this.worker) return this.starting ?? Promise.resolve();
    const w = new Worker(threadFile(), { workerData: this.data });
    this.worker = w;
    w.on('message', (m: ToMain) => this.onMessage(m));
    w.on('error', (e) => this.died(w, e));
    w.on('exit', (code) => this.died(w, new Error(`shard thread ${this.data.thread} exited (${code})`)));
    this.starting = this.command({ op: 'init' }).then(
      () => {
        this.starting = undefined;
        this.set.ready(this);
      },
      (e: unknown) => {
        this.starting = undefined;
        void w.terminate();
        throw e;
      },
    );
    return this.starting;
  }

  /** Its shards fail (the host restarts them from their data dirs); what it had not answered fails. */
  private died(w: Worker, e: Error): void {
    if (this.worker !== w) return;
    this.worker = undefined;
    this.earlierHostMessages += this.reportedHostMessages;
    this.reportedHostMessages = 0;
    // (what its shards had open stays open: their log files are fds of the process, not the thread)
    if (this.shards.size) this.log('error', `shard thread ${this.data.thread} died: ${e.message}`);
    const err = new FreshetError('UNAVAILABLE', `shard thread ${this.data.thread} died: ${e.message}`);
    for (const p of this.pending.values()) p.reject(err);
    this.pending.clear();
    this.calls.fail();
    // its shards' deltas: the host stops ticking them (a tick waiting for them goes on)
    for (const r of this.ticks.values()) r();
    this.ticks.clear();
    this.gathering?.resolve();
    this.gathering = undefined;
    for (const t of this.tickables.values()) void this.hostDeltas?.detach(t);
    this.tickables.clear();
    for (const s of this.shards.values()) s.threadDied();
  }

  /** The host's tick of `shard`: gathered with the thread's other shards into one post. */
  private tickShard(shard: number): Promise<void> {
    const w = this.worker;
    if (!w) return Promise.resolve();
    if (!this.gathering) {
      let resolve!: () => void;
      const done = new Promise<void>((r) => (resolve = r));
      const g = { shards: [] as number[], done, resolve };
      this.gathering = g;
      // the host's tick asks every shard in one synchronous pass
      queueMicrotask(() => {
        if (this.gathering !== g) return;
        this.gathering = undefined;
        const id = this.nextId++;
        this.ticks.set(id, g.resolve);
        w.postMessage({ op: 'tick', id, shards: g.shards } satisfies ToThread);
      });
    }
    this.gathering.shards.push(shard);
    return this.gathering.done;
  }

  command(c: Command): Promise<unknown> {
    const w = this.worker;
    if (!w)
      return Promise.reject(
        new FreshetError('UNAVAILABLE', `shard thread ${this.data.thread} is not running`),
      );
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      w.postMessage({ ...c, id });
    });
  }

  /** One part of a host message (a view of the socket's buffer), handed to the thread. */
  call(sid: number, kind: HostPartKind, frame: Uint8Array, handOffs?: HandOffs): RoutedReply {
    if (!this.worker) return undefined;
    const tag = partTag(sid, kind);
    return handOffs ? handOffs.add(this.calls, tag, frame) : this.calls.call(tag, frame);
  }

  private onMessage(m: ToMain): void {
    switch (m.t) {
      case 'replies':
        this.calls.replies(m.parts);
        return;
      case 'done': {
        const p = this.pending.get(m.id);
        this.pending.delete(m.id);
        if (m.error) p?.reject(FreshetError.fromEnvelope(m.error as ErrorEnvelope));
        else p?.resolve(m.value);
        return;
      }
      case 'log':
        this.shards.get(m.sid)?.log(m.level, m.msg, m.fields);
        return;
      case 'status':
        this.reportedHostMessages = m.hostMessages;
        for (const s of m.list) this.shards.get(s.sid)?.mirror(s);
        return;
      case 'deltas-attach': {
        const t: Tickable = { tick: () => this.tickShard(m.shard) };
        this.tickables.set(m.shard, t);
        this.hostDeltas?.attach(t, m.shard, m.intervalMs);
        return;
      }
      case 'deltas-detach': {
        const t = this.tickables.get(m.shard);
        this.tickables.delete(m.shard);
        const w = this.worker;
        const detached = () => w?.postMessage({ op: 'detached', id: m.id } satisfies ToThread);
        if (t && this.hostDeltas) void this.hostDeltas.detach(t).then(detached);
        else detached();
        return;
      }
      case 'delta':
        this.hostDeltas?.sink(m.shard)(m.frame);
        return;
      case 'ticked':
        // into the host delta being gathered (the host's tick waits for this reply)
        unpackFrames(m.parts, (shard, _tag, frame) => this.hostDeltas?.sink(shard)(frame!));
        this.ticks.get(m.id)?.();
        this.ticks.delete(m.id);
        return;
    }
  }

  /** Stops its shards (a host stops them before, one by one) and ends the thread. */
  async close(): Promise<void> {
    const w = this.worker;
    if (!w) return;
    await this.command({ op: 'close' }).catch(() => undefined);
    this.worker = undefined;
    await w.terminate();
  }
}

/**
 * A shard host's shard threads (host option `threads`, docs/resharding.md): each hosted shard
 * runs in one of them, on that thread's own NATS connection, so a host's shards use its cores
 * while the host's own thread follows the placement and runs the leases. With `endpoints` the
 * threads answer host messages too, beside the host's thread: each pair of threads shares a port
 * for the parts of each other's shards, and every thread knows which thread runs which shard.
 */
export class ShardThreads implements ThreadSet {
  private threads: ShardThread[] = [];
  private nextSid = 1;
  /** shard → the thread that runs it (last started there). */
  private readonly routes = new Map<number, number>();

  private constructor() {}

  ready(t: ShardThread): void {
    for (const o of this.threads) {
      if (o === t || !o.ready) continue;
      const { port1, port2 } = new MessageChannel();
      t.post({ op: 'peer', thread: o.data.thread, port: port1 }, [port1]);
      o.post({ op: 'peer', thread: t.data.thread, port: port2 }, [port2]);
    }
    if (this.routes.size) void t.command({ op: 'routes', set: [...this.routes] }).catch(() => undefined);
  }

  async route(shard: number, thread: number): Promise<void> {
    this.routes.set(shard, thread);
    await Promise.all(
      this.threads
        .filter((t) => t.ready)
        .map((t) => t.command({ op: 'routes', set: [[shard, thread]] }).catch(() => undefined)),
    );
  }

  /** `hostDeltas`: the host's, which its threads' shards then publish through. */
  static async start(
    count: number,
    data: Omit<ThreadData, 'thread' | 'hostDeltas'>,
    log: ActorLog,
    hostDeltas?: HostDeltas,
  ): Promise<ShardThreads> {
    const t = new ShardThreads();
    t.threads = Array.from(
      { length: count },
      (_, thread) =>
        new ShardThread({ ...data, thread, hostDeltas: hostDeltas !== undefined }, log, hostDeltas, t),
    );
    try {
      await Promise.all(t.threads.map((x) => x.ensure()));
    } catch (e) {
      await t.close();
      throw e;
    }
    return t;
  }

  /** A shard to start on the thread with the fewest shards (a dead thread is started again). */
  shard(input: ShardOptionsInput, log: ActorLog): ThreadShard {
    const thread = this.threads.reduce((a, b) => (b.shards.size < a.shards.size ? b : a));
    return new ThreadShard(thread, this.nextSid++, input, log);
  }

  /** Shards per thread (the host's status). */
  counts(): number[] {
    return this.threads.map((t) => t.shards.size);
  }

  /** Each thread's event-loop busy and idle time so far (a run's own: it restarts at 0). */
  eventLoopUtilization(): (EventLoopUtilization | undefined)[] {
    return this.threads.map((t) => t.eventLoopUtilization());
  }

  /** Host messages each thread's endpoints answered (the host's status). */
  hostMessages(): number[] {
    return this.threads.map((t) => t.hostMessages);
  }

  async close(): Promise<void> {
    await Promise.all(this.threads.map((t) => t.close()));
  }
}
