#!/usr/bin/env node
import { Command } from 'commander';
import { registerCommands } from './commands/index.js';

const program = new Command('freshet')
  .description('Freshet: real-time feedback learning for search and recommendation, on NATS.')
  .showHelpAfterError()
  .enablePositionalOptions();

registerCommands(program);

program.parseAsync(process.argv).catch((err: unknown) => {
  const e = err as { code?: string; message?: string };
  process.stderr.write(`freshet: ${e.code ? `[${e.code}] ` : ''}${e.message ?? String(err)}\n`);
  process.exitCode = 1;
});
