import type { Command } from 'commander';
import { statusCommand } from './status.js';

/**
 * Every `freshet` subcommand, in the order `--help` lists them (demo first). Each command lives
 * in its own module and exports a factory returning a commander Command.
 */
const factories: Array<() => Command> = [statusCommand];

export function registerCommands(program: Command): void {
  for (const make of factories) program.addCommand(make());
}
