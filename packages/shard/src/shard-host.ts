import { rmSync } from 'node:fs';
import { hostname } from 'node:os';
import { performance } from 'node:perf_hooks';
import { join } from 'node:path';
import type { KV, NatsConnection } from 'nats';
import { z } from 'zod';
import {
  connectNats,
  hostNameError,
  jsonLineLog,
  Lifecycle,
  natsOptionsSchema,
  placementKv,
  readLease,
  readPlacement,
  releaseLease,
  takeLease,
  type ActorLog,
  type ActorState,
  type Endpoint,
  type ProcessActor,
} from '@freshet/nats';
import { assertClusterName, FreshetError, subjects, type ShardStatus } from '@freshet/protocol';
import { HostDeltas } from './host-deltas.js';
import { HOST_MESSAGES_IN_FLIGHT, hostEndpoints, hostQueue } from './host-messages.js';
import type { HostedShard } from './hosted-shard.js';
import { compileShardOptions, type ShardOptionsInput } from './shard-options.js';
import { ShardThreads } from './shard-threads.js';
import { ThreadBusy } from './thread-busy.js';
import { Shard } from './shard.js';

/** Options of a shard host process (`freshet shard-host`, docs/resharding.md). */
export const shardHostOptionsSchema = z
  .object({
    cluster: z.string().min(1),
    /**
     * This host's name in the placement (`freshet shard place --hosts …`); default: the machine's
     * host name up to its first dot (a StatefulSet pod's name, stable across restarts).
     */
    host: z.string().optional(),
    nats: natsOptionsSchema.prefault({}),
    /** Each hosted shard keeps its log and checkpoints in `<dataDir>/shard-<index>`. */
    dataDir: z.string().min(1),
    /**
     * Options every hosted shard gets (the shard's own options, less cluster, shard, shards, nats
     * and dataDir, which the host fills in). Checkpoints always go to the Object Store: that is
     * how a shard moves.
     */
    shard: z.record(z.string(), z.unknown()).default({}),
    /** How often the host checks the placement and the leases it waits for. */
    pollMs: z.number().int().min(10).default(250),
    /** How often it says what it waits for (no placement yet, a lease another host holds). */
    waitLogMs: z.number().int().min(1).default(10_000),
    /**
     * Host messages (pulls or pushes for several of its shards) handled at once per kind; one
     * more is answered OVERLOADED and its parts retried. Each part also counts against its
     * shard's own bound (`limits.maxInFlight`), which is what protects a shard.
     */
    hostMessagesInFlight: z.number().int().min(1).default(HOST_MESSAGES_IN_FLIGHT),
    /**
     * Shard threads: 0 runs the hosted shards on the host's own thread; n ≥ 1 spreads them over
     * n worker threads, each with its own NATS connection, while the host's thread follows the
     * placement. Host messages are answered by the host's thread and every shard thread (a queue
     * group), each handing the parts for other threads' shards to them. On a dedicated machine:
     * its cores less one.
     */
    threads: z.number().int().min(0).max(256).default(0),
  })
  .strict();
export type ShardHostOptionsInput = z.input<typeof shardHostOptionsSchema>;
export type ShardHostOptions = z.infer<typeof shardHostOptionsSchema> & { host: string };

const reserved = ['cluster', 'shard', 'shards', 'nats', 'dataDir'];

export function compileShardHostOptions(input: ShardHostOptionsInput): ShardHostOptions {
  const r = shardHostOptionsSchema.safeParse(input);
  if (!r.success) {
    const i = r.error.issues[0];
    throw new FreshetError(
      'CONFIG',
      `shard host options: ${i?.path.join('.') ?? ''} ${i?.message ?? 'invalid'}`,
    );
  }
  assertClusterName(r.data.cluster);
  const host = r.data.host ?? hostname().split('.')[0]!;
  const badHost = hostNameError(host);
  if (badHost) throw new FreshetError('CONFIG', `shard host options: ${badHost}`);
  const own = reserved.filter((k) => k in r.data.shard);
  if (own.length) {
    throw new FreshetError(
      'CONFIG',
      `shard host options: shard.${own[0]} is the host's to set, not the template's`,
    );
  }
  const ck = r.data.shard.checkpoint as { store?: string } | undefined;
  if (ck?.store === 'dir') {
    throw new FreshetError(
      'CONFIG',
      'shard host options: hosted shards checkpoint to the Object Store (a move restores from there)',
    );
  }
  // the template must make a valid shard: a usage error now, not a failed shard after a move
  const o = { ...r.data, host };
  compileShardOptions(hostedShardOptions(o, 0, 1));
  return o;
}

function hostedShardOptions(o: ShardHostOptions, shard: number, shards: number): ShardOptionsInput {
  const t = o.shard as Partial<ShardOptionsInput>;
  return {
    ...t,
    cluster: o.cluster,
    nats: o.nats,
    shard,
    shards,
    dataDir: join(o.dataDir, `shard-${shard}`),
    checkpoint: { ...(t.checkpoint ?? {}), store: 'object-store' },
  };
}

/** Called as hosted shards start and stop (the CLI wires their admin commands with it). */
export interface ShardHostHooks {
  onShardStarted?(shard: HostedShard): void | Promise<void>;
  onShardStopping?(shard: HostedShard): void | Promise<void>;
}

export interface ShardHostDeps {
  nc?: NatsConnection;
  signal?: AbortSignal;
  log?: ActorLog;
  hooks?: ShardHostHooks;
}

/** A shard host's status: the placement it follows and each shard it runs or waits for. */
export interface ShardHostStatus {
  role: 'shard-host';
  cluster: string;
  id: string;
  host: string;
  state: ActorState;
  /** The placement epoch it last acted on (null: no placement yet). */
  epoch: number | null;
  /** Shards the placement gives this host. */
  assigned: number[];
  /** Shards running here, with their status. */
  running: ShardStatus[];
  /** Shards assigned here whose lease another host still holds: index → holder. */
  waiting: Record<string, string>;
  /** Shards stopped here whose final checkpoint is not in the Object Store yet (lease kept). */
  unreleased: number[];
  moves: { in: number; out: number; lastInMs: number | null; lastOutMs: number | null };
  /** Host delta messages sent, the shard deltas they carried, failed ticks (null: `hostDeltas` off). */
  hostDeltas: { messages: number; parts: number; errors: number } | null;
  /** Shards per shard thread (null: option `threads` 0, the shards run on the host's thread). */
  threads: number[] | null;
  /**
   * Host messages answered: by the host's thread, then by each shard thread (they answer them
   * too, a queue group; at most `pollMs` old).
   */
  hostMessages: number[];
  /**
   * Event-loop busy share of the host's thread, then of each shard thread, over the last window
   * of at least a second (empty until one has passed since the first status).
   */
  busy: number[];
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const done = () => {
      clearTimeout(t);
      signal.removeEventListener('abort', done);
      resolve();
    };
    const t = setTimeout(done, ms);
    signal.addEventListener('abort', done, { once: true });
  });
}

/**
 * A process that runs the shards the cluster's placement gives it (docs/resharding.md). It
 * follows the placement in KV: a shard taken away is drained (final checkpoint uploaded to the
 * Object Store) and its lease released; a shard given to it is started once its lease is free,
 * from the Object Store when another host held it last, else from its own data dir. Its shards
 * share its thread and NATS connection, or run in its shard threads (option `threads`, each with
 * a connection of its own). Workers and serving nodes address shards by index, so they
 * follow a move without knowing of it: for the second or so a shard is between hosts, its
 * requests get no answer and are retried.
 */
export class ShardHost implements ProcessActor {
  readonly role = 'shard';
  readonly options: ShardHostOptions;
  private readonly life: Lifecycle;
  private readonly log: ActorLog;
  private nc: NatsConnection | undefined;
  private ownsNc = false;
  private kv: KV | undefined;
  private readonly running = new Map<number, HostedShard>();
  /** The shard threads (option `threads`), or undefined: shards on this thread. */
  private threads: ShardThreads | undefined;
  /** Pulls and pushes for several of its shards in one message (host-messages.ts). */
  private hostEps: Endpoint[] = [];
  private hostMessagesHere = 0;
  private readonly busy = new ThreadBusy(() => [
    performance.eventLoopUtilization(),
    ...(this.threads?.eventLoopUtilization() ?? []),
  ]);
  /** Its shards' deltas in one message per tick (shard option `hostDeltas`). */
  private hostDeltas: HostDeltas | undefined;
  /** Stopped, final checkpoint not yet in the Object Store: the lease stays ours. */
  private readonly unreleased = new Map<number, HostedShard>();
  private readonly waiting = new Map<number, string>();
  private readonly lastWaitLog = new Map<string, number>();
  private assigned: number[] = [];
  private epoch: number | null = null;
  /** Shards held here before a crash and placed elsewhere have been handed off (first pass). */
  private recovered = false;
  private loopDone: Promise<void> | undefined;
  private readonly loopAbort = new AbortController();
  private readonly moves = {
    in: 0,
    out: 0,
    lastInMs: null as number | null,
    lastOutMs: null as number | null,
  };

  constructor(
    input: ShardHostOptionsInput,
    private readonly deps: ShardHostDeps = {},
  ) {
    this.options = compileShardHostOptions(input);
    this.log = deps.log ?? jsonLineLog({ role: 'shard', id: this.id });
    this.life = new Lifecycle(
      { start: (signal) => this.doStart(signal), stop: () => this.doStop() },
      { name: this.id, log: this.log, signal: deps.signal },
    );
  }

  get id(): string {
    return `shard-host-${this.options.host}`;
  }
  get cluster(): string {
    return this.options.cluster;
  }
  get state(): ActorState {
    return this.life.state;
  }
  /** The shards running here now (index → shard). */
  get shards(): ReadonlyMap<number, HostedShard> {
    return this.running;
  }
  readyFields(): Record<string, unknown> {
    return {
      host: this.options.host,
      epoch: this.epoch,
      shards: [...this.running.keys()].sort((a, b) => a - b),
    };
  }

  /** Connects and acts on the placement once (shards whose lease is free are running after it). */
  start(): Promise<void> {
    return this.life.start();
  }
  stop(): Promise<void> {
    return this.life.stop();
  }

  private async doStart(signal: AbortSignal): Promise<void> {
    const o = this.options;
    this.nc =
      this.deps.nc ??
      (await connectNats(o.nats, `freshet-shard-host-${o.cluster}-${o.host}`, {
        inboxPrefix: subjects(o.cluster).inboxPrefix('shard'),
      }));
    this.ownsNc = !this.deps.nc;
    try {
      // with shard threads, they answer host messages too (a queue group with this thread's)
      this.hostEps = hostEndpoints(
        this.nc,
        o.cluster,
        o.host,
        (shard, kind, frame, handOffs) => this.running.get(shard)?.hostCall(kind, frame, handOffs),
        {
          maxInFlight: o.hostMessagesInFlight,
          queue: o.threads > 0 ? hostQueue(o.host) : undefined,
          onMessage: () => this.hostMessagesHere++,
        },
      );
      const template = compileShardOptions(hostedShardOptions(o, 0, 1));
      if (template.hostDeltas)
        this.hostDeltas = new HostDeltas(
          this.nc,
          o.cluster,
          o.host,
          template.limits.maxDeltaBytes,
          template.servingSlices,
        );
      if (o.threads > 0)
        this.threads = await ShardThreads.start(
          o.threads,
          {
            cluster: o.cluster,
            host: o.host,
            nats: o.nats,
            statusMs: Math.min(1000, o.pollMs),
            endpoints: { maxInFlight: o.hostMessagesInFlight },
          },
          this.log,
          this.hostDeltas,
        );
      this.kv = await placementKv(this.nc, o.cluster);
      await this.reconcile(signal);
    } catch (e) {
      await this.drainHostEndpoints();
      await this.stopShards();
      await this.threads?.close();
      if (this.ownsNc) await this.nc.drain().catch(() => undefined);
      throw e;
    }
    this.loopDone = this.loop(this.loopAbort.signal);
  }

  private async loop(signal: AbortSignal): Promise<void> {
    while (!signal.aborted) {
      await sleep(this.options.pollMs, signal);
      if (signal.aborted) break;
      try {
        await this.reconcile(signal);
      } catch (e) {
        this.waitLog('reconcile', 'warn', 'placement not read; trying again', {
          code: e instanceof FreshetError ? e.code : 'UNAVAILABLE',
          error: (e as Error).message,
        });
      }
    }
  }

  /** One pass: hand off what is no longer ours, then take what is (when its lease is free). */
  private async reconcile(signal: AbortSignal): Promise<void> {
    const kv = this.kv!;
    const me = this.options.host;
    const stored = await readPlacement(kv).catch((e: unknown) => {
      // no bucket yet (init has not run): the same wait as no placement
      if (/not found/i.test((e as Error).message)) return undefined;
      throw e;
    });
    for (const [i, shard] of this.unreleased) await this.tryRelease(i, shard);
    if (!stored) {
      this.waitLog(
        'placement',
        'warn',
        `no shard placement in cluster ${this.options.cluster} yet: run \`freshet shard place --hosts ${me},…\``,
      );
      return;
    }
    const p = stored.value;
    this.epoch = p.epoch;
    const shards = p.hosts.length;
    this.assigned = p.hosts.flatMap((h, i) => (h === me ? [i] : []));
    const want = new Set(this.assigned);
    // leaving first: the next host of a shard waits for its lease
    await Promise.all(
      [...this.running.keys()].filter((i) => !want.has(i)).map((i) => this.handOff(i, p.epoch)),
    );
    for (const i of this.waiting.keys()) if (!want.has(i)) this.waiting.delete(i);
    // a shard that failed here (its log could not be written) restarts from its own data dir,
    // as a crashed shard process would: the lease stays ours meanwhile
    for (const [i, shard] of [...this.running]) {
      if (shard.state !== 'failed') continue;
      this.log('error', `shard ${i} failed; restarting it from its data dir`, { shard: i });
      this.running.delete(i);
      await this.stopping(shard);
      await shard.stop().catch(() => undefined);
    }
    // placed here again while its hand-off waits for the Object Store: run it again from our dir
    for (const i of [...this.unreleased.keys()]) if (want.has(i)) this.unreleased.delete(i);
    if (!this.recovered) {
      let pending = false;
      // shards this host held when it died and that were placed elsewhere meanwhile: their next
      // host waits for the lease, so run each once from our data dir and hand it off properly
      for (let i = 0; i < shards && !signal.aborted; i++) {
        if (want.has(i) || (await readLease(kv, i))?.value.holder !== me) continue;
        this.log(
          'info',
          `shard ${i} was held here and is placed on ${p.hosts[i]}: recovering it to hand it off`,
          {
            shard: i,
          },
        );
        await this.takeOver(i, shards, p.epoch);
        if (this.running.has(i)) await this.handOff(i, p.epoch);
        else pending = true;
      }
      // one that did not start is tried again next pass
      this.recovered = !pending;
    }
    for (const i of this.assigned) {
      if (signal.aborted) return;
      if (this.running.has(i) || this.unreleased.has(i)) continue;
      await this.takeOver(i, shards, p.epoch);
    }
  }

  private async takeOver(i: number, shards: number, epoch: number): Promise<void> {
    const me = this.options.host;
    const t0 = Date.now();
    const lease = await takeLease(this.kv!, i, me, epoch);
    if (!lease.taken) {
      this.waiting.set(i, lease.holder);
      this.waitLog(`lease-${i}`, 'info', `shard ${i}: waiting for host ${lease.holder} to release it`, {
        shard: i,
        holder: lease.holder,
      });
      return;
    }
    this.waiting.delete(i);
    const o = hostedShardOptions(this.options, i, shards);
    const ours = lease.before === undefined || lease.before.last === me;
    // another host ran it since our copy was written: the Object Store has the state, our dir is
    // stale (with no lease ever written, a dir here can only be ours: kept)
    if (!ours) rmSync(o.dataDir!, { recursive: true, force: true });
    const log: ActorLog = (level, msg, fields) => this.log(level, msg, { shard: i, ...fields });
    const shard: HostedShard = this.threads
      ? this.threads.shard(o, log)
      : new Shard(o, {
          nc: this.nc,
          log,
          ...(this.hostDeltas ? { hostDeltas: this.hostDeltas } : {}),
        });
    try {
      await shard.start();
    } catch (e) {
      // the lease stays ours (nobody else may start it meanwhile); the next pass tries again
      this.log('error', `shard ${i} did not start; retrying`, {
        shard: i,
        code: e instanceof FreshetError ? e.code : 'INTERNAL',
        error: (e as Error).message,
      });
      await shard.stop().catch(() => undefined);
      return;
    }
    this.running.set(i, shard);
    if (lease.before && !ours) {
      this.moves.in++;
      this.moves.lastInMs = Date.now() - t0;
    }
    this.log('info', `shard ${i} running`, {
      shard: i,
      epoch,
      from: ours ? 'data dir' : (shard.restore?.checkpointSource ?? 'empty'),
      version: shard.status().version,
      ms: Date.now() - t0,
    });
    try {
      await this.deps.hooks?.onShardStarted?.(shard);
    } catch (e) {
      this.log('warn', 'onShardStarted failed', { shard: i, error: (e as Error).message });
    }
  }

  /** Drains shard `i` (final checkpoint to the Object Store) and releases its lease. */
  private async handOff(i: number, epoch: number): Promise<void> {
    const shard = this.running.get(i)!;
    this.running.delete(i);
    const t0 = Date.now();
    await this.stopping(shard);
    await shard.stop();
    this.moves.out++;
    this.moves.lastOutMs = Date.now() - t0;
    this.unreleased.set(i, shard);
    await this.tryRelease(i, shard, epoch);
  }

  /** Tells the embedder a shard stops (its admin commands go); a failure there must not stop the move. */
  private async stopping(shard: HostedShard): Promise<void> {
    try {
      await this.deps.hooks?.onShardStopping?.(shard);
    } catch (e) {
      this.log('warn', 'onShardStopping failed', { shard: shard.options.shard, error: (e as Error).message });
    }
  }

  /**
   * Releases a stopped shard's lease once everything it applied is in the Object Store. Until
   * then the lease stays ours, so no host restores an older state: the upload is retried each
   * pass, and a restart of this host resumes the shard from its own data dir.
   */
  private async tryRelease(i: number, shard: HostedShard, epoch = this.epoch ?? 0): Promise<void> {
    if (!shard.handedOff) {
      const err = await shard.finishHandOff().then(
        () => undefined,
        (e: unknown) => e as Error,
      );
      if (err) {
        this.waitLog(
          `release-${i}`,
          'error',
          `shard ${i} stopped but its final state is not in the Object Store: lease kept`,
          {
            shard: i,
            error: err.message,
          },
        );
        return;
      }
    }
    await releaseLease(this.kv!, i, this.options.host, epoch);
    this.unreleased.delete(i);
    this.log('info', `shard ${i} handed off`, { shard: i, epoch });
  }

  private waitLog(
    key: string,
    level: 'info' | 'warn' | 'error',
    msg: string,
    fields?: Record<string, unknown>,
  ): void {
    const now = Date.now();
    if (now - (this.lastWaitLog.get(key) ?? -Infinity) < this.options.waitLogMs) return;
    this.lastWaitLog.set(key, now);
    this.log(level, msg, fields);
  }

  private async drainHostEndpoints(): Promise<void> {
    await Promise.allSettled(this.hostEps.splice(0).map((e) => e.drain()));
  }

  private async stopShards(): Promise<void> {
    await Promise.all(
      [...this.running.keys()].map((i) => this.handOff(i, this.epoch ?? 0).catch(() => undefined)),
    );
  }

  /**
   * Stops its shards one by one like a move (final checkpoint uploaded, lease released): a
   * stopped host never blocks the placement, and started again it takes its shards back from
   * its own data dirs (it held them last).
   */
  private async doStop(): Promise<void> {
    this.loopAbort.abort();
    await this.loopDone;
    // workers ask each shard directly meanwhile (no responders here, or, with shard threads, the
    // threads' "not here" for each shard once it stopped): the shards drain as before
    await this.drainHostEndpoints();
    await this.stopShards();
    await this.hostDeltas?.stop();
    await this.threads?.close();
    if (this.ownsNc) await this.nc?.drain().catch(() => undefined);
  }

  status(): ShardHostStatus {
    return {
      role: 'shard-host',
      cluster: this.cluster,
      id: this.id,
      host: this.options.host,
      state: this.state,
      epoch: this.epoch,
      assigned: this.assigned,
      running: [...this.running.values()].map((s) => s.status()),
      waiting: Object.fromEntries([...this.waiting].map(([i, h]) => [String(i), h])),
      unreleased: [...this.unreleased.keys()],
      moves: { ...this.moves },
      hostDeltas: this.hostDeltas ? { ...this.hostDeltas.counters } : null,
      threads: this.threads?.counts() ?? null,
      hostMessages: [this.hostMessagesHere, ...(this.threads?.hostMessages() ?? [])],
      busy: this.busy.read(),
    };
  }
}
