import { Command, InvalidArgumentError } from 'commander';
import { FreshetError, type AdminCommand } from '@freshet/protocol';
import type { NatsOptionsInput } from '@freshet/nats';
import type { Shard } from '@freshet/shard';
import type { AdminHandler } from '../role-admin.js';
import { aborted, shutdownSignal } from '../signals.js';

/**
 * The role processes: `freshet shard|worker|serve --options-json '<json>'`. The options are the
 * role's own zod schema (validated there); FRESHET_NATS_* variables fill in what the options'
 * `nats` leaves out, so secrets never travel on a command line. Each process answers the admin
 * commands for its actor (checkpoint and restore on shards, drain on every role) and, with
 * `--metrics-port`, serves its own Prometheus metrics.
 *
 * Role packages are imported inside the actions: `freshet status` or `--help` must not pay for
 * loading tfjs, piscina and the shard's optimizers.
 */
interface RoleFlags {
  optionsJson?: string;
  optionsFile?: string;
  metricsPort?: number;
  metricsHost: string;
}

function port(v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0 || n > 65535)
    throw new InvalidArgumentError('expected a port number (0 picks a free one)');
  return n;
}

/** A started actor as the process loop sees it, whatever its role. */
interface RunningActor {
  role: 'shard' | 'worker' | 'serving';
  cluster: string;
  id: string;
  status(): Record<string, unknown>;
  /** Stops it (drain: stop taking work, hand back or finish in-flight work, close). */
  stop(timeoutMs?: number): Promise<void>;
  /** Role-specific admin commands besides drain. */
  commands?: Partial<Record<Exclude<AdminCommand, 'drain'>, AdminHandler>>;
  /** Set when the role prints its own ready line. */
  announced?: boolean;
}

/**
 * Starts one actor. `signal` is the process's shutdown: a role waiting for `freshet init` (no
 * stream or model spec yet) stops waiting on SIGTERM and the starter resolves undefined.
 */
type Starter = (options: Record<string, unknown>, signal: AbortSignal) => Promise<RunningActor | undefined>;

/** One JSON log line on stderr, as the running actor's own lines. */
const logLine =
  (role: RunningActor['role']) => (level: string, msg: string, fields?: Record<string, unknown>) =>
    process.stderr.write(JSON.stringify({ t: new Date().toISOString(), level, role, msg, ...fields }) + '\n');

const startShardActor: Starter = async (options, signal) => {
  const { runShardProcess } = await import('@freshet/shard');
  const ac = new AbortController();
  signal.addEventListener('abort', () => ac.abort(), { once: true });
  let started!: (s: Shard) => void;
  const ready = new Promise<Shard>((r) => (started = r));
  const run = runShardProcess(options as Parameters<typeof runShardProcess>[0], ac.signal, started);
  const shard = await Promise.race([
    ready,
    run.then(
      () => {
        throw new FreshetError('INTERNAL', 'shard stopped while starting');
      },
      (e: unknown) => {
        if (signal.aborted) return undefined;
        throw e;
      },
    ),
  ]);
  if (!shard) return undefined;
  return {
    role: 'shard',
    cluster: shard.options.cluster,
    id: `shard-${shard.options.shard}`,
    announced: true,
    status: () => shard.status() as unknown as Record<string, unknown>,
    async stop() {
      ac.abort();
      await run;
    },
    commands: {
      async checkpoint() {
        await shard.checkpoint();
        const s = shard.status();
        return { version: s.version, ...(s.lastCheckpoint ?? {}) };
      },
      async restore(req) {
        const r = await shard.reload(req.checkpoint);
        return { ...r };
      },
    },
  };
};

const startWorkerActor: Starter = async (options, signal) => {
  const { startWorker } = await import('@freshet/worker');
  let w;
  try {
    w = await startWorker(options as Parameters<typeof startWorker>[0], { signal, log: logLine('worker') });
  } catch (e) {
    if (signal.aborted) return undefined;
    throw e;
  }
  return {
    role: 'worker',
    cluster: w.options.cluster,
    id: w.id,
    status: () => w.status() as unknown as Record<string, unknown>,
    stop: (timeoutMs) => w.stop(timeoutMs),
  };
};

const startServingActor: Starter = async (options) => {
  const { startServing } = await import('@freshet/serving');
  const node = await startServing(options as Parameters<typeof startServing>[0]);
  return {
    role: 'serving',
    cluster: node.options.cluster,
    id: node.options.id,
    status: () => node.status() as unknown as Record<string, unknown>,
    stop: () => node.stop(),
  };
};

/**
 * Starts an actor, wires its admin commands and metrics, announces it on stdout, and runs until
 * SIGINT/SIGTERM or a `drain` command; then stops it cleanly and resolves (exit code 0).
 */
async function runActor(start: Starter, flags: RoleFlags, signal: AbortSignal): Promise<void> {
  const { natsOptionsFromEnv, readRoleOptions } = await import('@freshet/nats');
  const options = readRoleOptions(flags, natsOptionsFromEnv());
  const actor = await start(options, signal);
  if (!actor) return;
  let stopping: Promise<void> | undefined;
  const stop = (timeoutMs?: number) => (stopping ??= actor.stop(timeoutMs));
  let drained!: () => void;
  const drainDone = new Promise<void>((r) => (drained = r));
  const log = logLine(actor.role);

  const { serveRoleAdmin } = await import('../role-admin.js');
  const admin = await serveRoleAdmin({
    nats: options.nats as NatsOptionsInput,
    cluster: actor.cluster,
    role: actor.role,
    id: actor.id,
    log,
    handlers: {
      ...actor.commands,
      async drain(req) {
        const t0 = Date.now();
        await stop(req.timeoutMs);
        return { stoppedMs: Date.now() - t0 };
      },
    },
    onReplied: (command, ok) => {
      if (command === 'drain' && ok) drained();
    },
  }).catch(async (e: unknown) => {
    await stop();
    throw e;
  });
  let metricsUrl: string | null = null;
  let metrics: { close(): Promise<void> } | undefined;
  if (flags.metricsPort !== undefined) {
    const { serveActorMetrics } = await import('../metrics.js');
    try {
      const m = await serveActorMetrics({
        cluster: actor.cluster,
        role: actor.role,
        id: actor.id,
        status: () => actor.status(),
        host: flags.metricsHost,
        port: flags.metricsPort,
      });
      metrics = m;
      metricsUrl = m.url;
    } catch (e) {
      await admin.close();
      await stop();
      throw e;
    }
  }
  if (!actor.announced) {
    process.stdout.write(
      JSON.stringify({
        event: 'ready',
        role: actor.role,
        id: actor.id,
        pid: process.pid,
        metrics: metricsUrl,
      }) + '\n',
    );
  } else if (metricsUrl) {
    process.stdout.write(JSON.stringify({ event: 'metrics', role: actor.role, url: metricsUrl }) + '\n');
  }
  await Promise.race([aborted(signal), drainDone]);
  await stop();
  await metrics?.close();
  await admin.close();
  // A stray handle (a library timer, a socket in TIME_WAIT) must not keep a stopped actor alive.
  setTimeout(() => process.exit(process.exitCode ?? 0), 3000).unref();
}

function roleCommand(name: string, description: string, start: Starter): () => Command {
  return () =>
    new Command(name)
      .description(description)
      .option('--options-json <json>', "the role's options as JSON")
      .option('--options-file <path>', "the role's options from a JSON file")
      .option('--metrics-port <n>', 'serve Prometheus metrics of this process on this port (0: any)', port)
      .option(
        '--metrics-host <host>',
        'metrics bind address (another than loopback exposes them)',
        '127.0.0.1',
      )
      .action(async (flags: RoleFlags) => {
        const signal = shutdownSignal();
        await runActor(start, flags, signal);
      });
}

export const shardCommand = roleCommand('shard', 'run a parameter-server shard process', startShardActor);
export const workerCommand = roleCommand('worker', 'run a gradient worker process', startWorkerActor);
export const serveCommand = roleCommand('serve', 'run a serving node process', startServingActor);
