import { FreshetError } from '@freshet/protocol';
import { jsonLineLog, type ActorLog } from './actor-log.js';
import type { ActorState } from './lifecycle.js';

/** What a role process needs of its actor: the actor contract plus its names. */
export interface ProcessActor {
  readonly role: 'shard' | 'worker' | 'serving';
  readonly cluster: string;
  readonly id: string;
  readonly state: ActorState;
  start(): Promise<void>;
  stop(): Promise<void>;
  /** Resolves once it does useful work (a serving node's replica caught up); default: started. */
  whenReady?(signal: AbortSignal): Promise<void>;
  /** Role-specific fields of the ready line (a shard's restore, a serving node's URL). */
  readyFields?(): Record<string, unknown>;
}

/** What the embedding command adds around a started actor (the CLI: admin commands, metrics). */
export interface ActorProcessExtras {
  /** More ready-line fields (`metrics`). */
  fields?: Record<string, unknown>;
  /** Resolves when the process should end without a signal (a `drain` command). */
  done?: Promise<void>;
  /** Closes what was added, after the actor stopped. */
  close?(): Promise<void>;
}

export interface ActorProcessSpec<A extends ProcessActor> {
  /** The role's options; a throw is a usage error (exit code 2). */
  options(): Record<string, unknown>;
  /** Builds the actor, not started: `signal` is the process's shutdown, `log` its stderr. */
  create(options: Record<string, unknown>, deps: { signal: AbortSignal; log: ActorLog }): A | Promise<A>;
  /** Runs after start, before the ready line. */
  onStarted?(actor: A, log: ActorLog): Promise<ActorProcessExtras | void>;
  /** Shutdown; default: the first SIGINT or SIGTERM. */
  signal?: AbortSignal;
  /** Where the ready line goes; default stdout. */
  out?: (line: string) => void;
}

/** The one ready line of every role process, the first JSON line on its stdout. */
export interface ReadyLine {
  event: 'ready';
  role: ProcessActor['role'];
  cluster: string;
  id: string;
  pid: number;
  [field: string]: unknown;
}

/** The ready line in `output` (a role process's stdout, log lines mixed in or not), if printed. */
export function parseReadyLine(output: string): ReadyLine | undefined {
  for (const line of output.split('\n')) {
    if (!line.startsWith('{"event":"ready"')) continue;
    try {
      return JSON.parse(line) as ReadyLine;
    } catch {
      // a line cut short: the process is still writing it
    }
  }
  return undefined;
}

function processSignal(): AbortSignal {
  const ac = new AbortController();
  for (const sig of ['SIGINT', 'SIGTERM'] as const) process.once(sig, () => ac.abort());
  return ac.signal;
}

const aborted = (signal: AbortSignal) =>
  new Promise<void>((r) => {
    if (signal.aborted) r();
    else signal.addEventListener('abort', () => r(), { once: true });
  });

/**
 * The process body of every role (`packages/<role>/dist/bin.js` and `freshet shard|worker|serve`):
 * reads the options, starts the actor, prints one ready line, runs until the signal (or the
 * extras' `done`), then stops it cleanly. Resolves with the exit code: 0 after a clean stop,
 * also when shut down while starting; 1 when the actor failed; 2 for unusable options.
 */
export async function runActorProcess<A extends ProcessActor>(spec: ActorProcessSpec<A>): Promise<number> {
  const signal = spec.signal ?? processSignal();
  const out = spec.out ?? ((line: string) => void process.stdout.write(line));
  let options: Record<string, unknown>;
  try {
    options = spec.options();
  } catch (e) {
    process.stderr.write(`${(e as Error).message}\n`);
    return 2;
  }
  let log = jsonLineLog();
  let actor: A | undefined;
  let extras: ActorProcessExtras | void = undefined;
  try {
    actor = await spec.create(options, { signal, log: (...a) => log(...a) });
    log = jsonLineLog({ role: actor.role, id: actor.id });
    await actor.start();
    extras = await spec.onStarted?.(actor, log);
    const ended = Promise.race([aborted(signal), extras?.done ?? new Promise<void>(() => undefined)]);
    const ready = actor.whenReady?.(signal);
    // ended first (a drain), the wait may still reject later: that is no failure
    ready?.catch(() => undefined);
    if (ready) await Promise.race([ready, ended]);
    if (!signal.aborted && actor.state === 'running') {
      const line: ReadyLine = {
        event: 'ready',
        role: actor.role,
        cluster: actor.cluster,
        id: actor.id,
        pid: process.pid,
        ...actor.readyFields?.(),
        ...extras?.fields,
      };
      out(JSON.stringify(line) + '\n');
      await ended;
    }
    await actor.stop();
    return 0;
  } catch (e) {
    await actor?.stop().catch(() => undefined);
    // shut down while starting: the start's wait ended, nothing failed
    if (signal.aborted) return 0;
    log('error', `${actor?.id ?? 'actor'} failed`, {
      code: e instanceof FreshetError ? e.code : 'INTERNAL',
      error: (e as Error)?.stack ?? String(e),
    });
    return 1;
  } finally {
    await extras?.close?.().catch(() => undefined);
  }
}
