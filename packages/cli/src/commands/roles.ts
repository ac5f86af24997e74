import { readFileSync } from 'node:fs';
import { Command } from 'commander';
import { natsOptionsFromEnv } from '@freshet/nats';
import { FreshetError } from '@freshet/protocol';
import { runShardProcess } from '@freshet/shard';
import { startWorker } from '@freshet/worker';
import { startServing } from '@freshet/serving';
import { aborted, shutdownSignal } from '../signals.js';

/**
 * The role processes: `freshet shard|worker|serve --options-json '<json>'`. The options are the
 * role's own zod schema (validated there); NATS options missing from them come from FRESHET_NATS_*
 * variables so that secrets never travel on a command line.
 */
interface RoleFlags {
  optionsJson?: string;
  optionsFile?: string;
}

function readOptions(flags: RoleFlags): Record<string, unknown> {
  let text: string | undefined;
  if (flags.optionsJson) text = flags.optionsJson;
  else if (flags.optionsFile) text = readFileSync(flags.optionsFile, 'utf8');
  if (!text)
    throw new FreshetError(
      'CONFIG',
      'pass the role options with --options-json <json> or --options-file <path>',
    );
  let o: unknown;
  try {
    o = JSON.parse(text);
  } catch (e) {
    throw new FreshetError('CONFIG', `role options are not JSON: ${(e as Error).message}`);
  }
  if (typeof o !== 'object' || o === null || Array.isArray(o))
    throw new FreshetError('CONFIG', 'role options must be a JSON object');
  const opts = o as Record<string, unknown>;
  if (opts.nats === undefined) opts.nats = natsOptionsFromEnv();
  return opts;
}

function roleCommand(
  name: string,
  description: string,
  run: (options: Record<string, unknown>, signal: AbortSignal) => Promise<void>,
): () => Command {
  return () =>
    new Command(name)
      .description(description)
      .option('--options-json <json>', "the role's options as JSON")
      .option('--options-file <path>', "the role's options from a JSON file")
      .action(async (flags: RoleFlags) => {
        const signal = shutdownSignal();
        await run(readOptions(flags), signal);
      });
}

/** Starts an actor, announces it on stdout, runs until SIGINT/SIGTERM, then stops it cleanly. */
async function runActor(
  role: string,
  start: () => Promise<{ stop(): Promise<void> }>,
  signal: AbortSignal,
): Promise<void> {
  const actor = await start();
  process.stdout.write(JSON.stringify({ event: 'ready', role, pid: process.pid }) + '\n');
  await aborted(signal);
  await actor.stop();
}

export const shardCommand = roleCommand('shard', 'run a parameter-server shard process', (o, signal) =>
  runShardProcess(o as Parameters<typeof runShardProcess>[0], signal),
);

export const workerCommand = roleCommand('worker', 'run a gradient worker process', (o, signal) =>
  runActor('worker', () => startWorker(o as Parameters<typeof startWorker>[0]), signal),
);

export const serveCommand = roleCommand('serve', 'run a serving node process', (o, signal) =>
  runActor('serving', () => startServing(o as Parameters<typeof startServing>[0]), signal),
);
