import type { Command } from 'commander';
import { benchCommand } from './bench.js';
import { checkpointCommand } from './checkpoint.js';
import { configCommand } from './config-show.js';
import { dashboardCommand } from './dashboard.js';
import { demoCommand } from './demo.js';
import { dictCommand } from './dict.js';
import { dlqCommand } from './dlq.js';
import { drainCommand } from './drain.js';
import { initCommand } from './init.js';
import { modelCommand } from './model.js';
import { replayCommand } from './replay.js';
import { restoreCommand } from './restore.js';
import { serveCommand, shardCommand, shardHostCommand, workerCommand } from './roles.js';
import { statusCommand } from './status.js';
import { upCommand } from './up.js';
import { userCommand } from './user-forget.js';

/**
 * Every `freshet` subcommand, in the order `--help` lists them (demo first). Each command lives
 * in its own module and exports a factory returning a commander Command.
 */
const factories: Array<() => Command> = [
  demoCommand,
  upCommand,
  initCommand,
  statusCommand,
  replayCommand,
  benchCommand,
  configCommand,
  shardCommand,
  shardHostCommand,
  workerCommand,
  serveCommand,
  checkpointCommand,
  restoreCommand,
  modelCommand,
  drainCommand,
  dlqCommand,
  dictCommand,
  userCommand,
  dashboardCommand,
];

export function registerCommands(program: Command): void {
  for (const make of factories) program.addCommand(make());
}
