import type { Command } from 'commander';
import { configCommand } from './config-show.js';
import { statusCommand } from './status.js';
import { upCommand } from './up.js';

/**
 * Every `freshet` subcommand, in the order `--help` lists them (demo first). Each command lives
 * in its own module and exports a factory returning a commander Command.
 */
const factories: Array<() => Command> = [upCommand, statusCommand, configCommand];

export function registerCommands(program: Command): void {
  for (const make of factories) program.addCommand(make());
}
