#!/usr/bin/env node
import { readFileSync } from 'node:fs';
import { natsOptionsFromEnv } from '@freshet/nats';
import { runServingProcess } from './serving-process.js';
import type { ServingOptionsInput } from './serving-options.js';

/**
 * Serving process entry point:
 *   node packages/serving/dist/bin.js --options-json '<json>' | --options-file <path>
 * NATS options missing from the JSON come from FRESHET_NATS_* variables. SIGINT/SIGTERM stop the
 * node cleanly (stop taking requests, answer in-flight ones, close).
 */
function parseArgs(argv: string[]): ServingOptionsInput {
  const i = argv.indexOf('--options-json');
  const f = argv.indexOf('--options-file');
  let text: string | undefined;
  if (i >= 0) text = argv[i + 1];
  else if (f >= 0 && argv[f + 1]) text = readFileSync(argv[f + 1]!, 'utf8');
  if (!text) throw new Error('usage: bin.js --options-json <json> | --options-file <path>');
  const o = JSON.parse(text) as ServingOptionsInput;
  if (o.nats === undefined) o.nats = natsOptionsFromEnv();
  return o;
}

const ac = new AbortController();
for (const sig of ['SIGINT', 'SIGTERM'] as const) process.once(sig, () => ac.abort());
try {
  await runServingProcess(parseArgs(process.argv.slice(2)), ac.signal);
  process.exit(0);
} catch (e) {
  process.stderr.write(`serving: ${(e as Error)?.stack ?? String(e)}\n`);
  process.exit(1);
}
