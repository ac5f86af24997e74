import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import type { ActorLog } from '@freshet/nats';
import { FreshetError, type ErrorEnvelope, type HostPartKind } from '@freshet/protocol';
import type { Tickable } from './delta-publisher.js';
import type { HostDeltas } from './host-deltas.js';
import type { ShardOptionsInput } from './shard-options.js';
import { PortBatch, unpackFrames } from './port-batch.js';
import type { Command, ThreadData, ToMain, ToThread } from './shard-thread-messages.js';
import { ThreadShard, type ShardThreadLink } from './thread-shard.js';

/** Where the compiled thread body lives (tests run src/ through vitest; threads need dist/). */
function threadFile(): string {
  const here = fileURLToPath(import.meta.url);
  const dir = dirname(here);
  const file = here.endsWith('.ts')
    ? join(dir, '..', 'dist', 'shard-thread.js')
    : join(dir, 'shard-thread.js');
  if (!existsSync(file))
    throw new FreshetError('CONFIG', `shard thread ${file} missing: build @freshet/shard first`);
  return file;
}

type Pending = { resolve(v: unknown): void; reject(e: Error): void };

/** One shard thread: its worker, the commands and host-message parts it has not answered yet. */
class ShardThread implements ShardThreadLink {
  private worker: Worker | undefined;
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private readonly calls = new Map<number, (frame: Uint8Array | undefined) => void>();
  private readonly outbox = new PortBatch((parts) =>
    this.worker?.postMessage({ op: 'calls', parts } satisfies ToThread, [
      parts.meta.buffer,
      parts.data.buffer,
    ]),
  );
  readonly shards = new Map<number, ThreadShard>();
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
  ) {}

  get alive(): boolean {
    return this.worker !== undefined;
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
    this.outbox.drop();
    // (what its shards had open stays open: their log files are fds of the process, not the thread)
    if (this.shards.size) this.log('error', `shard thread ${this.data.thread} died: ${e.message}`);
    const err = new FreshetError('UNAVAILABLE', `shard thread ${this.data.thread} died: ${e.message}`);
    for (const p of this.pending.values()) p.reject(err);
    this.pending.clear();
    for (const c of this.calls.values()) c(undefined);
    this.calls.clear();
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
  call(sid: number, kind: HostPartKind, frame: Uint8Array): Promise<Uint8Array | undefined> | undefined {
    if (!this.worker) return undefined;
    const id = this.nextId++;
    return new Promise((resolve) => {
      this.calls.set(id, resolve);
      // copied into the outgoing batch now: the message's buffer is not ours past this turn
      this.outbox.add(id, sid * 2 + (kind === 'push' ? 1 : 0), frame);
    });
  }

  private onMessage(m: ToMain): void {
    switch (m.t) {
      case 'replies':
        unpackFrames(m.parts, (id, _tag, frame) => {
          const c = this.calls.get(id);
          this.calls.delete(id);
          c?.(frame);
        });
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
 * while the host's own thread answers host messages, follows the placement and runs the leases.
 */
export class ShardThreads {
  private readonly threads: ShardThread[];
  private nextSid = 1;

  private constructor(threads: ShardThread[]) {
    this.threads = threads;
  }

  /** `hostDeltas`: the host's, which its threads' shards then publish through. */
  static async start(
    count: number,
    data: Omit<ThreadData, 'thread' | 'hostDeltas'>,
    log: ActorLog,
    hostDeltas?: HostDeltas,
  ): Promise<ShardThreads> {
    const threads = Array.from(
      { length: count },
      (_, thread) =>
        new ShardThread({ ...data, thread, hostDeltas: hostDeltas !== undefined }, log, hostDeltas),
    );
    const t = new ShardThreads(threads);
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

  async close(): Promise<void> {
    await Promise.all(this.threads.map((t) => t.close()));
  }
}
