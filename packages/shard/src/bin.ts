#!/usr/bin/env node
import { readRoleOptions, roleOptionsArgs, runActorProcess } from '@freshet/nats';
import { Shard } from './shard.js';
import type { ShardOptionsInput } from './shard-options.js';

/**
 * Shard process entry point:
 *   node packages/shard/dist/bin.js --options-json '<json>' | --options-file <path>
 * FRESHET_NATS_* variables fill in what the options' `nats` leaves out (readRoleOptions). SIGINT/SIGTERM stop
 * the shard cleanly (drain, final delta, checkpoint).
 */
process.exit(
  await runActorProcess({
    options: () => readRoleOptions(roleOptionsArgs(process.argv.slice(2))),
    create: (options, deps) => new Shard(options as ShardOptionsInput, deps),
  }),
);
