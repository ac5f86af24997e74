import { Command, InvalidArgumentError } from 'commander';
import { runReplay } from '@freshet/client';
import { natsOptionsFromEnv } from '@freshet/nats';
import { Progress } from '../progress.js';
import { shutdownSignal } from '../signals.js';
import { natsUrlsFrom } from './common.js';

function positive(v: string): number {
  const n = Number(v);
  if (!Number.isFinite(n) || n <= 0) throw new InvalidArgumentError('expected a positive number');
  return n;
}

interface ReplayFlags {
  data: string;
  spec?: string;
  rate?: number;
  speedup?: number;
  limit?: number;
  nats?: string;
  cluster: string;
  partitions?: number;
  json?: boolean;
}

/** `freshet replay`: publishes a dataset as feedback events in time order. */
export function replayCommand(): Command {
  return new Command('replay')
    .description(
      'publish a dataset (criteo:, movielens:, obd:, csv:, synthetic) as feedback events in time order',
    )
    .requiredOption(
      '--data <ref>',
      'criteo:PATH | movielens:PATH | obd:PATH | csv:PATH | synthetic[:k=v,...]',
    )
    .option('--spec <file>', 'column mapping for csv: data (JSON)')
    .option('--rate <n>', 'events per second', positive)
    .option('--speedup <x>', "replay the dataset's own time x times faster", positive)
    .option('--limit <n>', 'stop after n events', positive)
    .option(
      '--nats <url>',
      'NATS URL(s), comma separated (default FRESHET_NATS_URL or nats://127.0.0.1:4222)',
    )
    .option('--cluster <name>', 'cluster name', 'local')
    .option('--partitions <n>', 'stream partitions when creating the stream', positive)
    .option('--json', 'print the summary as one JSON line')
    .action(async (f: ReplayFlags) => {
      if (f.rate !== undefined && f.speedup !== undefined) {
        throw new InvalidArgumentError('--rate and --speedup exclude each other');
      }
      const signal = shutdownSignal();
      const progress = new Progress();
      const summary = await runReplay({
        data: f.data,
        ...(f.spec !== undefined ? { spec: f.spec } : {}),
        ...(f.rate !== undefined ? { rate: f.rate } : {}),
        ...(f.speedup !== undefined ? { speedup: f.speedup } : {}),
        ...(f.limit !== undefined ? { limit: f.limit } : {}),
        ...(f.partitions !== undefined ? { partitions: f.partitions } : {}),
        nats: { ...natsOptionsFromEnv(), servers: natsUrlsFrom(f) },
        cluster: f.cluster,
        signal,
        onProgress: (p) =>
          progress.update(
            `replay ${f.data}: ${p.events} events, ${p.acked} acked, ${Math.round(p.eventsPerSec)}/s`,
            f.limit ? p.events / f.limit : undefined,
          ),
      });
      progress.done();
      if (f.json) process.stdout.write(JSON.stringify(summary) + '\n');
      else {
        process.stdout.write(
          `replayed ${summary.events} events (${summary.acked} acked, ${summary.duplicates} duplicates, ` +
            `${summary.failed} failed) in ${(summary.elapsedMs / 1000).toFixed(1)} s, ` +
            `${Math.round(summary.eventsPerSec)}/s${summary.aborted ? ' (stopped early)' : ''}\n`,
        );
      }
      if (summary.failed > 0) process.exitCode = 1;
    });
}
