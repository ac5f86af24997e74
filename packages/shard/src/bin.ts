#!/usr/bin/env node
import { readFileSync } from 'node:fs';
import { natsOptionsFromEnv } from '@freshet/nats';
import { runShardProcess } from './shard.js';
import type { ShardOptionsInput } from './shard-options.js';

/**
 * Shard process entry point:
 *   node packages/shard/dist/bin.js --options-json '<json>' | --options-file <path>
 * NATS options missing from the JSON come from FRESHET_NATS_* variables. SIGINT/SIGTERM stop
 * the shard cleanly (drain, final delta, checkpoint).
 */
function parseArgs(argv: string[]): ShardOptionsInput {
  const i = argv.indexOf('--options-json');
  const f = argv.indexOf('--options-file');
  let text: string | undefined;
  if (i >= 0) text = argv[i + 1];
  else if (f >= 0 && argv[f + 1]) text = readFileSync(argv[f + 1]!, 'utf8');
  if (!text) throw new Error('usage: bin.js --options-json <json> | --options-file <path>');
  const o = JSON.parse(text) as ShardOptionsInput;
  if (o.nats === undefined) o.nats = natsOptionsFromEnv();
  return o;
}

const ac = new AbortController();
for (const sig of ['SIGINT', 'SIGTERM'] as const) process.once(sig, () => ac.abort());
runShardProcess(parseArgs(process.argv.slice(2)), ac.signal).then(
  () => process.exit(0),
  (e: unknown) => {
    process.stderr.write(`shard: ${(e as Error)?.stack ?? String(e)}\n`);
    process.exit(1);
  },
);
