import { FreshetError } from '@freshet/protocol';
import { silentLog, type ActorLog } from './actor-log.js';

/** The states every actor goes through (docs/architecture.md, "Actor contract"). */
export const actorStates = ['created', 'starting', 'running', 'draining', 'stopped', 'failed'] as const;
export type ActorState = (typeof actorStates)[number];

/**
 * Which transitions are legal. `running → starting` is a restart in place (a shard's restore
 * rebuilds its state while the process lives on); `failed → draining` lets a failed actor be
 * stopped, which releases whatever it still holds.
 */
export const actorTransitions: Readonly<Record<ActorState, readonly ActorState[]>> = {
  created: ['starting', 'stopped'],
  starting: ['running', 'failed'],
  running: ['draining', 'failed', 'starting'],
  draining: ['stopped', 'failed'],
  stopped: [],
  failed: ['draining'],
};

/** What the actor does at each step; the lifecycle decides when, and in which state. */
export interface LifecycleHooks {
  /**
   * Acquires and starts everything. `signal` aborts when stop() is called or the actor's signal
   * fires while starting: a start that waits (for `freshet init`) must end its wait on it. A
   * throw ends in `failed`; the hook releases what it acquired before throwing. Not called by
   * {@link Lifecycle.runningNow}.
   */
  start(signal: AbortSignal): Promise<void>;
  /**
   * Stops taking work, finishes or hands back what is in flight, releases everything. `from` is
   * `failed` when the actor failed (at start or later): there is nothing to drain then.
   */
  stop(from: 'running' | 'failed'): Promise<void>;
}

export interface LifecycleOptions {
  /** Names the actor in transition logs and errors, e.g. `shard-0`. */
  name: string;
  log?: ActorLog;
  /** Aborting it stops the actor (the process's SIGTERM); aborted before start, start throws. */
  signal?: AbortSignal;
}

/**
 * One actor's state machine: explicit states, a transition table (an illegal transition throws
 * ILLEGAL_STATE), every transition logged, one stop() promise for every caller.
 */
export class Lifecycle {
  private st: ActorState = 'created';
  private readonly log: ActorLog;
  private readonly name: string;
  private readonly signal: AbortSignal | undefined;
  /** Aborts the start hook's wait when stop() comes while starting. */
  private readonly startAbort = new AbortController();
  /** The start (or restart) in progress: stop() lets it settle first. */
  private pending: Promise<void> | undefined;
  private stopping: Promise<void> | undefined;
  private readonly onAbort = () => void this.stop().catch(() => undefined);

  constructor(
    private readonly hooks: LifecycleHooks,
    options: LifecycleOptions,
  ) {
    this.name = options.name;
    this.log = options.log ?? silentLog;
    this.signal = options.signal;
  }

  get state(): ActorState {
    return this.st;
  }

  /** Moves to `to`, or throws ILLEGAL_STATE. Actors call it for failures found while running. */
  to(to: ActorState, fields?: Record<string, unknown>): void {
    const from = this.st;
    if (!actorTransitions[from].includes(to)) throw this.illegal(to);
    this.st = to;
    this.log(to === 'failed' ? 'error' : 'info', `${this.name} ${to}`, {
      actor: this.name,
      from,
      to,
      ...fields,
    });
  }

  private illegal(to: ActorState): FreshetError {
    return new FreshetError('ILLEGAL_STATE', `${this.name}: ${this.st} → ${to} is not a legal transition`);
  }

  /**
   * created → starting → running, or failed when the hook throws (rethrown). Only from created:
   * running → starting is a {@link restart}, never a second start.
   */
  start(): Promise<void> {
    if (this.st !== 'created') return Promise.reject(this.illegal('starting'));
    this.to('starting');
    if (this.signal?.aborted) {
      const e = new FreshetError('SHUTTING_DOWN', `${this.name}: aborted before start`);
      this.to('failed', { error: e.message });
      return Promise.reject(e);
    }
    this.signal?.addEventListener('abort', this.onAbort, { once: true });
    return this.run(() => this.hooks.start(this.startAbort.signal));
  }

  /**
   * created → starting → running now, without a start hook: for an actor that works once
   * constructed (a publisher). An already aborted signal stops it at once.
   */
  runningNow(): void {
    if (this.st !== 'created') throw this.illegal('starting');
    this.to('starting');
    this.to('running');
    if (this.signal?.aborted) void this.stop().catch(() => undefined);
    else this.signal?.addEventListener('abort', this.onAbort, { once: true });
  }

  /**
   * running → starting → running around `body` (a reload in place); a throw ends in failed. A
   * stop() meanwhile waits for it.
   */
  restart(body: () => Promise<void>): Promise<void> {
    if (this.st !== 'running') return Promise.reject(this.illegal('starting'));
    this.to('starting');
    return this.run(body);
  }

  private run(body: () => Promise<void>): Promise<void> {
    const p = (async () => {
      try {
        await body();
      } catch (e) {
        this.to('failed', { error: (e as Error)?.message ?? String(e) });
        throw e;
      }
      this.to('running');
    })();
    this.pending = p.then(
      () => undefined,
      () => undefined,
    );
    return p;
  }

  /**
   * Stops the actor: the same promise for every caller, concurrent or later. From created it just
   * ends; while starting it aborts the start and waits for it; then drains through the stop hook.
   * A throwing hook ends in failed and rejects.
   */
  stop(): Promise<void> {
    this.stopping ??= this.doStop();
    return this.stopping;
  }

  private async doStop(): Promise<void> {
    this.signal?.removeEventListener('abort', this.onAbort);
    if (this.st === 'created') {
      this.to('stopped');
      return;
    }
    this.startAbort.abort();
    while (this.st === 'starting') await this.pending;
    const from = this.st as 'running' | 'failed';
    this.to('draining');
    try {
      await this.hooks.stop(from);
    } catch (e) {
      this.to('failed', { error: (e as Error)?.message ?? String(e) });
      throw e;
    }
    this.to('stopped');
  }
}
