import type { ActorLog, ActorState } from '@freshet/nats';
import type { HostPartKind, ShardStatus } from '@freshet/protocol';
import type { HostedShard, RestoreInfo } from './hosted-shard.js';
import type { HandOffs, RoutedReply } from './part-calls.js';
import { compileShardOptions, type ShardOptions, type ShardOptionsInput } from './shard-options.js';
import type { Command, StoppedShard } from './shard-thread-messages.js';

/** What a ThreadShard needs of the shard thread it runs in (shard-threads.ts). */
export interface ShardThreadLink {
  readonly alive: boolean;
  /** Its shards by sid (it reports their statuses and deaths to them). */
  readonly shards: Map<number, ThreadShard>;
  /** Starts the thread (again, after it died). */
  ensure(): Promise<void>;
  command(c: Command): Promise<unknown>;
  /** Tells the host's threads that this thread runs `shard` now (their endpoints hand its parts here). */
  announce(shard: number): Promise<void>;
  /** One part of a host message, in its group for this thread if `handOffs` (undefined: the thread is not running). */
  call(sid: number, kind: HostPartKind, frame: Uint8Array, handOffs?: HandOffs): RoutedReply;
}

/** A shard running in a shard thread, as its host drives it. */
export class ThreadShard implements HostedShard {
  readonly options: ShardOptions;
  private _state: ActorState = 'created';
  private last: ShardStatus | undefined;
  restore: RestoreInfo | undefined;
  handedOff = false;
  finalCheckpointWritten = false;
  private stopping: Promise<void> | undefined;

  constructor(
    private readonly thread: ShardThreadLink,
    private readonly sid: number,
    private readonly input: ShardOptionsInput,
    readonly log: ActorLog,
  ) {
    this.options = compileShardOptions(input);
  }

  get id(): string {
    return `shard-${this.options.shard}`;
  }
  get cluster(): string {
    return this.options.cluster;
  }
  get state(): ActorState {
    return this._state;
  }

  async start(): Promise<void> {
    this._state = 'starting';
    this.thread.shards.set(this.sid, this);
    try {
      await this.thread.ensure();
      this.restore = ((await this.thread.command({ op: 'start', sid: this.sid, options: this.input })) ??
        undefined) as RestoreInfo | undefined;
      await this.thread.announce(this.options.shard);
      if (this._state === 'starting') this._state = 'running';
    } catch (e) {
      this._state = 'failed';
      throw e;
    }
  }

  stop(): Promise<void> {
    this.stopping ??= this.doStop();
    return this.stopping;
  }

  private async doStop(): Promise<void> {
    this._state = 'draining';
    try {
      const r = (await this.thread.command({ op: 'stop', sid: this.sid })) as StoppedShard | null;
      if (r) this.mirror(r);
    } catch {
      // its thread died: nothing more to stop (its log stays in the data dir)
    }
    this._state = 'stopped';
    // kept on its thread only while its final checkpoint still has to reach the Object Store
    if (this.handedOff || !this.finalCheckpointWritten || !this.thread.alive)
      this.thread.shards.delete(this.sid);
  }

  async finishHandOff(): Promise<void> {
    if (this.handedOff) return;
    if (!this.thread.alive)
      throw new Error('its shard thread died before the final checkpoint was uploaded (restart this host)');
    const r = (await this.thread.command({ op: 'finish', sid: this.sid })) as StoppedShard | null;
    if (r) this.mirror(r);
    this.handedOff = true;
    this.thread.shards.delete(this.sid);
  }

  /** The thread's report of this shard. */
  mirror(s: StoppedShard): void {
    this.last = s.status;
    this.handedOff = s.handedOff;
    this.finalCheckpointWritten = s.finalCheckpointWritten;
    // a failure there (its log could not be written) is seen by the host's next placement pass
    if (s.status.state === 'failed' && this._state === 'running') this._state = 'failed';
  }

  /** Its thread died while it ran: the host restarts it from its data dir, as after a failure. */
  threadDied(): void {
    if (this._state === 'running' || this._state === 'starting') this._state = 'failed';
  }

  status(): ShardStatus {
    return { ...(this.last ?? emptyStatus(this.options)), state: this._state };
  }

  hostCall(kind: HostPartKind, frame: Uint8Array, handOffs?: HandOffs): RoutedReply {
    if (this._state !== 'running') return undefined;
    return this.thread.call(this.sid, kind, frame, handOffs);
  }

  async checkpoint(): Promise<void> {
    await this.thread.command({ op: 'checkpoint', sid: this.sid });
  }

  async reload(checkpoint?: string): Promise<RestoreInfo & { versionBefore: number }> {
    const r = await this.thread.command({
      op: 'reload',
      sid: this.sid,
      ...(checkpoint === undefined ? {} : { checkpoint }),
    });
    return r as RestoreInfo & { versionBefore: number };
  }

  async forgetUser(user: string, fields?: readonly string[]): Promise<Record<string, number>> {
    const r = await this.thread.command({ op: 'forget', sid: this.sid, user, ...(fields ? { fields } : {}) });
    return r as Record<string, number>;
  }
}

/** The status of a shard the thread has not reported on yet (starting). */
function emptyStatus(o: ShardOptions): ShardStatus {
  const none = { p50: 0, p99: 0, mean: 0, n: 0 };
  return {
    cluster: o.cluster,
    shard: o.shard,
    shards: o.shards,
    state: 'created',
    model: '',
    rows: 0,
    bytes: 0,
    version: 0,
    updatesPerS: 0,
    pushesPerS: 0,
    staleness: { p50: 0, p99: 0, max: 0, count: 0 },
    rejects: {},
    evictions: 0,
    timings: { applyMs: none, walMs: none, deltaMs: none },
    duplicates: 0,
    deltaSeq: 0,
    lastCheckpoint: null,
    wal: null,
    tables: [],
  };
}
