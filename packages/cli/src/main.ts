#!/usr/bin/env node
import { Command } from 'commander';

/**
 * The `freshet` entry point. A command named on the command line is loaded alone (its module,
 * and through it only the packages it needs), so `freshet status` or an admin command does not
 * pay for loading every role package; `--help` and anything not in {@link single} load the full
 * registry (`commands/index.ts`, which stays the list of record).
 */
const single: Record<string, () => Promise<() => Command>> = {
  status: () => import('./commands/status.js').then((m) => m.statusCommand),
  checkpoint: () => import('./commands/checkpoint.js').then((m) => m.checkpointCommand),
  restore: () => import('./commands/restore.js').then((m) => m.restoreCommand),
  model: () => import('./commands/model.js').then((m) => m.modelCommand),
  drain: () => import('./commands/drain.js').then((m) => m.drainCommand),
  dlq: () => import('./commands/dlq.js').then((m) => m.dlqCommand),
  user: () => import('./commands/user-forget.js').then((m) => m.userCommand),
  shard: () => import('./commands/roles.js').then((m) => m.shardCommand),
  'shard-host': () => import('./commands/roles.js').then((m) => m.shardHostCommand),
  worker: () => import('./commands/roles.js').then((m) => m.workerCommand),
  serve: () => import('./commands/roles.js').then((m) => m.serveCommand),
  replay: () => import('./commands/replay.js').then((m) => m.replayCommand),
  dashboard: () => import('./commands/dashboard.js').then((m) => m.dashboardCommand),
  config: () => import('./commands/config-show.js').then((m) => m.configCommand),
  up: () => import('./commands/up.js').then((m) => m.upCommand),
  init: () => import('./commands/init.js').then((m) => m.initCommand),
  demo: () => import('./commands/demo.js').then((m) => m.demoCommand),
};

/** The subcommand named in `argv` (the first word that is not an option), if any. */
export function commandOf(argv: readonly string[]): string | undefined {
  return argv.find((a) => !a.startsWith('-'));
}

async function main(): Promise<void> {
  const program = new Command('freshet')
    .description('Freshet: real-time feedback learning for search and recommendation, on NATS.')
    .showHelpAfterError()
    .enablePositionalOptions();
  const name = commandOf(process.argv.slice(2));
  const load = name !== undefined && Object.hasOwn(single, name) ? single[name] : undefined;
  if (load) program.addCommand((await load())());
  else (await import('./commands/index.js')).registerCommands(program);
  await program.parseAsync(process.argv);
}

main().catch((err: unknown) => {
  const e = err as { code?: string; message?: string };
  process.stderr.write(`freshet: ${e.code ? `[${e.code}] ` : ''}${e.message ?? String(err)}\n`);
  process.exitCode = 1;
});
