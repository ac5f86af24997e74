#!/usr/bin/env node
import { readRoleOptions, roleOptionsArgs } from '@freshet/nats';
import { runShardProcess } from './shard.js';
import type { ShardOptionsInput } from './shard-options.js';

/**
 * Shard process entry point:
 *   node packages/shard/dist/bin.js --options-json '<json>' | --options-file <path>
 * FRESHET_NATS_* variables fill in what the options' `nats` leaves out (readRoleOptions). SIGINT/SIGTERM stop
 * the shard cleanly (drain, final delta, checkpoint).
 */

const ac = new AbortController();
for (const sig of ['SIGINT', 'SIGTERM'] as const) process.once(sig, () => ac.abort());
runShardProcess(readRoleOptions(roleOptionsArgs(process.argv.slice(2))) as ShardOptionsInput, ac.signal).then(
  () => process.exit(0),
  (e: unknown) => {
    process.stderr.write(`shard: ${(e as Error)?.stack ?? String(e)}\n`);
    process.exit(1);
  },
);
