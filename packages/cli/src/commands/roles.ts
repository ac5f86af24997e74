import { Command, InvalidArgumentError } from 'commander';
import { FreshetError, type AdminCommand } from '@freshet/protocol';
import type { ActorLog, ActorProcessExtras, NatsOptionsInput, ProcessActor } from '@freshet/nats';
import type { ServingNode, ServingOptionsInput } from '@freshet/serving';
import type { HostedShard, Shard, ShardHost, ShardHostOptionsInput, ShardOptionsInput } from '@freshet/shard';
import type { Worker, WorkerOptionsInput } from '@freshet/worker';
import type { AdminHandler } from '../role-admin.js';
import { shardIndexFromEnv } from '../shard-index.js';
import { shutdownSignal } from '../signals.js';
import { shardCheckpointsCommand } from './shard-checkpoints.js';
import {
  shardMoveCommand,
  shardPlaceCommand,
  shardPlacementCommand,
  shardReleaseCommand,
} from './shard-place.js';

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
  /** shard only: the index from this variable's trailing -<ordinal> (a StatefulSet pod's name) */
  indexFromEnv?: string;
  /** shard-host only: the host name from this variable (a StatefulSet pod's name) */
  hostFromEnv?: string;
}

function port(v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0 || n > 65535)
    throw new InvalidArgumentError('expected a port number (0 picks a free one)');
  return n;
}

/** An actor as the process loop sees it, whatever its role. */
interface RoleActor extends ProcessActor {
  status(): unknown;
  /** Stops it (drain: stop taking work, hand back or finish in-flight work, close). */
  stop(timeoutMs?: number): Promise<void>;
}

/** How a role's actor is made, and its admin commands besides drain. */
interface Role<A extends RoleActor> {
  create(options: Record<string, unknown>, deps: { signal: AbortSignal; log: ActorLog }): Promise<A>;
  commands?(actor: A): Partial<Record<Exclude<AdminCommand, 'drain'>, AdminHandler>>;
}

const shardRole: Role<Shard> = {
  async create(options, deps) {
    const { Shard } = await import('@freshet/shard');
    return new Shard(options as ShardOptionsInput, deps);
  },
  commands: (shard) => shardCommands(shard),
};

/** A shard's admin commands, whether it runs alone, on a shard host or in a host's shard thread. */
function shardCommands(shard: HostedShard): Partial<Record<Exclude<AdminCommand, 'drain'>, AdminHandler>> {
  return {
    async checkpoint() {
      await shard.checkpoint();
      const s = shard.status();
      return { version: s.version, ...(s.lastCheckpoint ?? {}) };
    },
    async restore(req) {
      const r = await shard.reload(req.checkpoint);
      return { ...r };
    },
    async forget(req) {
      return (await import('./user-forget.js')).shardForgetHandler(shard)(req);
    },
  };
}

/**
 * A shard host runs the shards the placement gives it (docs/resharding.md). Each hosted shard
 * answers the shard admin commands under its own id while it runs here, as a shard process
 * would; draining one alone is refused (the host would start it again): move it, or drain the host.
 */
const shardHostRole: Role<ShardHost> = {
  async create(options, deps) {
    const { ShardHost } = await import('@freshet/shard');
    const { serveRoleAdmin } = await import('../role-admin.js');
    const admins = new Map<number, { close(): Promise<void> }>();
    return new ShardHost(options as ShardHostOptionsInput, {
      ...deps,
      hooks: {
        async onShardStarted(shard) {
          const admin = await serveRoleAdmin({
            nats: options.nats as NatsOptionsInput,
            cluster: shard.cluster,
            role: 'shard',
            id: shard.id,
            log: deps.log,
            handlers: {
              ...shardCommands(shard),
              drain: () =>
                Promise.reject(
                  new FreshetError(
                    'BAD_REQUEST',
                    `${shard.id} runs on a shard host: move it (freshet shard place) or drain the host`,
                    { retryable: false },
                  ),
                ),
            },
          });
          admins.set(shard.options.shard, admin);
        },
        async onShardStopping(shard) {
          await admins.get(shard.options.shard)?.close();
          admins.delete(shard.options.shard);
        },
      },
    });
  },
};

const workerRole: Role<Worker> = {
  async create(options, deps) {
    const { Worker } = await import('@freshet/worker');
    return new Worker(options as WorkerOptionsInput, deps);
  },
  commands: (worker) => ({
    async forget(req) {
      return (await import('./user-forget.js')).workerForgetHandler(worker)(req);
    },
  }),
};

const servingRole: Role<ServingNode> = {
  async create(options, deps) {
    const { ServingNode } = await import('@freshet/serving');
    return new ServingNode(options as ServingOptionsInput, deps);
  },
};

/**
 * Wires a started actor's admin commands and, with `--metrics-port`, its metrics; a `drain`
 * command ends the process like SIGTERM does.
 */
async function serveExtras<A extends RoleActor>(
  actor: A,
  role: Role<A>,
  flags: RoleFlags,
  nats: NatsOptionsInput,
  log: ActorLog,
): Promise<ActorProcessExtras> {
  let drained!: () => void;
  const done = new Promise<void>((r) => (drained = r));
  const { serveRoleAdmin } = await import('../role-admin.js');
  const admin = await serveRoleAdmin({
    nats,
    cluster: actor.cluster,
    role: actor.role,
    id: actor.id,
    log,
    handlers: {
      ...role.commands?.(actor),
      async drain(req) {
        const t0 = Date.now();
        await actor.stop(req.timeoutMs);
        return { stoppedMs: Date.now() - t0 };
      },
    },
    onReplied: (command, ok) => {
      if (command === 'drain' && ok) drained();
    },
  });
  if (flags.metricsPort === undefined) return { done, close: () => admin.close() };
  const { serveActorMetrics } = await import('../metrics.js');
  try {
    const metrics = await serveActorMetrics({
      cluster: actor.cluster,
      role: actor.role,
      id: actor.id,
      status: () => actor.status() as Record<string, unknown>,
      host: flags.metricsHost,
      port: flags.metricsPort,
    });
    return {
      fields: { metrics: metrics.url },
      done,
      async close() {
        await metrics.close();
        await admin.close();
      },
    };
  } catch (e) {
    await admin.close();
    throw e;
  }
}

/**
 * Runs one role process (runActorProcess: start, ready line, run until SIGINT/SIGTERM or a
 * `drain` command, stop cleanly) with the admin commands and metrics around it.
 */
async function runActor<A extends RoleActor>(role: Role<A>, flags: RoleFlags, signal: AbortSignal) {
  const { natsOptionsFromEnv, readRoleOptions, runActorProcess } = await import('@freshet/nats');
  let options: Record<string, unknown> = {};
  process.exitCode = await runActorProcess({
    signal,
    options: () => {
      options = readRoleOptions(flags, natsOptionsFromEnv());
      if (flags.indexFromEnv) options = shardIndexFromEnv(options, flags.indexFromEnv);
      if (flags.hostFromEnv) options = hostFromEnv(options, flags.hostFromEnv);
      return options;
    },
    create: (o, deps) => role.create(o, deps),
    onStarted: (actor, log) => serveExtras(actor, role, flags, options.nats as NatsOptionsInput, log),
  });
  // A stray handle (a library timer, a socket in TIME_WAIT) must not keep a stopped actor alive.
  setTimeout(() => process.exit(process.exitCode ?? 0), 3000).unref();
}

function roleCommand<A extends RoleActor>(name: string, description: string, role: Role<A>): () => Command {
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
        await runActor(role, flags, signal);
      });
}

export const shardCommand = () =>
  roleCommand('shard', 'run a parameter-server shard process', shardRole)()
    .option(
      '--index-from-env <name>',
      "the shard index from this variable's trailing -<ordinal> (a StatefulSet pod's name)",
    )
    .addCommand(shardCheckpointsCommand())
    .addCommand(shardPlaceCommand())
    .addCommand(shardMoveCommand())
    .addCommand(shardPlacementCommand())
    .addCommand(shardReleaseCommand());
export const shardHostCommand = () =>
  roleCommand(
    'shard-host',
    'run a shard host: the shards the cluster placement gives it (docs/resharding.md)',
    shardHostRole,
  )().option('--host-from-env <name>', "the host name from this variable (a StatefulSet pod's name)");

/** The `host` option from an environment variable (`--host-from-env POD_NAME`). */
function hostFromEnv(options: Record<string, unknown>, name: string): Record<string, unknown> {
  const host = process.env[name];
  if (!host) throw new FreshetError('CONFIG', `--host-from-env ${name}: ${name} is not set`);
  return { ...options, host };
}
export const workerCommand = roleCommand('worker', 'run a gradient worker process', workerRole);
export const serveCommand = roleCommand('serve', 'run a serving node process', servingRole);
