#!/usr/bin/env node
import { readRoleOptions, roleOptionsArgs, runActorProcess } from '@freshet/nats';
import { ServingNode } from './serving-node.js';
import type { ServingOptionsInput } from './serving-options.js';

/**
 * Serving process entry point:
 *   node packages/serving/dist/bin.js --options-json '<json>' | --options-file <path>
 * FRESHET_NATS_* variables fill in what the options' `nats` leaves out (readRoleOptions). Ready
 * once the replica has caught up. SIGINT/SIGTERM stop the node cleanly (stop taking requests,
 * answer in-flight ones, close).
 */
process.exit(
  await runActorProcess({
    options: () => readRoleOptions(roleOptionsArgs(process.argv.slice(2))),
    create: (options, deps) => new ServingNode(options as ServingOptionsInput, deps),
  }),
);
