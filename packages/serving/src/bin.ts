#!/usr/bin/env node
import { readRoleOptions, roleOptionsArgs } from '@freshet/nats';
import { runServingProcess } from './serving-process.js';
import type { ServingOptionsInput } from './serving-options.js';

/**
 * Serving process entry point:
 *   node packages/serving/dist/bin.js --options-json '<json>' | --options-file <path>
 * FRESHET_NATS_* variables fill in what the options' `nats` leaves out (readRoleOptions). SIGINT/SIGTERM stop the
 * node cleanly (stop taking requests, answer in-flight ones, close).
 */

const ac = new AbortController();
for (const sig of ['SIGINT', 'SIGTERM'] as const) process.once(sig, () => ac.abort());
try {
  await runServingProcess(
    readRoleOptions(roleOptionsArgs(process.argv.slice(2))) as ServingOptionsInput,
    ac.signal,
  );
  process.exit(0);
} catch (e) {
  process.stderr.write(`serving: ${(e as Error)?.stack ?? String(e)}\n`);
  process.exit(1);
}
