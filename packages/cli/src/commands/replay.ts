import { readFile } from 'node:fs/promises';
import { Command, InvalidArgumentError } from 'commander';
import { Progress } from '../progress.js';
import { shutdownSignal } from '../signals.js';
import { connectAdmin, natsUrlsFrom } from './common.js';
import { eventEncoding, positiveNumber } from '../cli-args.js';
import { resolveDataRef } from '../data-ref.js';

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
  report?: string;
  reportIntervalMs: number;
  ensure: boolean;
  encoding: 'json' | 'msgpack';
  dictionary?: string;
  compress?: boolean;
}

/** `freshet replay`: publishes a dataset as feedback events in time order. */
export function replayCommand(): Command {
  return new Command('replay')
    .description(
      'publish a dataset (criteo:, movielens:, obd:, csv:, synthetic) as feedback events in time order',
    )
    .requiredOption(
      '--data <ref>',
      'criteo:PATH | movielens:PATH | obd:PATH | csv:PATH | synthetic[:k=v,...] (relative PATHs: cwd, then $FRESHET_DATA_DIR)',
    )
    .option('--spec <file>', 'column mapping for csv: data (JSON)')
    .option('--rate <n>', 'events per second', positiveNumber)
    .option('--speedup <x>', "replay the dataset's own time x times faster", positiveNumber)
    .option('--limit <n>', 'stop after n events', positiveNumber)
    .option(
      '--nats <url>',
      'NATS URL(s), comma separated (default FRESHET_NATS_URL or nats://127.0.0.1:4222)',
    )
    .option('--cluster <name>', 'cluster name', 'local')
    .option('--partitions <n>', 'stream partitions when creating the stream', positiveNumber)
    .option(
      '--no-ensure',
      "do not create or update the stream first (a labeller's or publisher's NATS user may not)",
    )
    .option('--encoding <enc>', 'json | msgpack', eventEncoding, 'json')
    .option('--compress', 'compress each event (zlib)')
    .option(
      '--dictionary <file>',
      'compress with this preset dictionary (`freshet dict build`); stored in the cluster first',
    )
    .option('--json', 'print the summary as one JSON line')
    .option('--report <file>', 'write an HTML report with the dashboard charts of the run')
    .option('--report-interval-ms <ms>', 'how often the report samples the cluster', positiveNumber, 1000)
    .action(async (f: ReplayFlags) => {
      if (f.rate !== undefined && f.speedup !== undefined) {
        throw new InvalidArgumentError('--rate and --speedup exclude each other');
      }
      const signal = shutdownSignal();
      const progress = new Progress();
      const [{ runReplay }, { natsOptionsFromEnv }] = await Promise.all([
        import('@freshet/client'),
        import('@freshet/nats'),
      ]);
      // --report: sample the cluster through the service API while the events go out.
      const rep = f.report ? await startReport(f) : undefined;
      const dictionary = f.dictionary ? new Uint8Array(await readFile(f.dictionary)) : undefined;
      const summary = await runReplay({
        data: resolveDataRef(f.data, process.env),
        encoding: f.encoding,
        ...(f.compress || dictionary ? { compression: dictionary ? { dictionary } : {} } : {}),
        ...(f.spec !== undefined ? { spec: f.spec } : {}),
        ...(f.rate !== undefined ? { rate: f.rate } : {}),
        ...(f.speedup !== undefined ? { speedup: f.speedup } : {}),
        ...(f.limit !== undefined ? { limit: f.limit } : {}),
        ...(f.partitions !== undefined ? { partitions: f.partitions } : {}),
        nats: { ...natsOptionsFromEnv(), servers: natsUrlsFrom(f) },
        cluster: f.cluster,
        ensure: f.ensure,
        signal,
        onProgress: (p) =>
          progress.update(
            `replay ${f.data}: ${p.events} events, ${p.acked} acked, ${Math.round(p.eventsPerSec)}/s`,
            f.limit ? p.events / f.limit : undefined,
          ),
      }).catch(async (e: unknown) => {
        await rep?.abandon();
        throw e;
      });
      progress.done();
      if (rep && f.report) {
        const { samples, bytes } = await rep.finish(f.report, summary as unknown as Record<string, unknown>);
        process.stderr.write(`report: ${f.report} (${samples} samples, ${bytes} bytes)\n`);
      }
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

/** Starts sampling the cluster for `--report`; `finish` takes a last sample and writes the file. */
async function startReport(f: ReplayFlags) {
  const { ReportRecorder, sampleCluster } = await import('../report.js');
  const nc = await connectAdmin(f, 'freshet-replay-report');
  const recorder = new ReportRecorder(f.cluster);
  const sampler = sampleCluster(nc, f.cluster, recorder, f.reportIntervalMs);
  return {
    async abandon() {
      await sampler.stop();
      await nc.close();
    },
    async finish(file: string, summary: Record<string, unknown>) {
      await sampler.stop();
      await nc.close();
      const bytes = await recorder.write(file, {
        title: `Freshet replay report: ${f.data} into cluster "${f.cluster}"`,
        summary,
      });
      return { samples: recorder.samples, bytes };
    },
  };
}
