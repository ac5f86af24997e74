#!/usr/bin/env node
// Process entry of a gradient worker: `--options-json '<json>'` (or `@file.json`) or
// `--options-file <path>`; FRESHET_NATS_* fill in what the options' `nats` leaves out.
// SIGINT/SIGTERM stop it cleanly (hand back, drain, give up leases).
import { readRoleOptions, roleOptionsArgs, runActorProcess } from '@freshet/nats';
import { Worker } from './worker.js';
import type { WorkerOptionsInput } from './worker-options.js';

process.exitCode = await runActorProcess({
  options: () => readRoleOptions(roleOptionsArgs(process.argv.slice(2))),
  create: (options, deps) => new Worker(options as WorkerOptionsInput, deps),
});
