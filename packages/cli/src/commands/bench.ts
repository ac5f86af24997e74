import { Command, InvalidArgumentError } from 'commander';
import { nonNegativeInt, positiveInt as int, positiveNumber as num } from '../cli-args.js';
import { resolveDataRef } from '../data-ref.js';
import { clusterBenchCommand, peerInitOption, scalingBenchCommand } from './bench-cluster.js';
import { driftBenchCommand } from './bench-drift.js';
import { warmBenchCommand } from './bench-warm.js';
import { ftrlBenchCommand } from './bench-ftrl.js';
import { moveBenchCommand } from './bench-move.js';
import { opeBenchCommand } from './bench-ope.js';
import { wireBenchCommand } from './bench-wire.js';

// Role packages are imported when a bench runs: `freshet --help` must not load tfjs and piscina.

/**
 * `freshet bench <what>`: each benchmark prints ONE JSON line on stdout (progress, if any, goes
 * to stderr), so `pnpm -s freshet bench shard --json | jq` works and results can be kept in git.
 * Speed targets are checked here, against a peer measured in the same run, never in timed tests.
 */
function print(result: object): void {
  process.stdout.write(JSON.stringify(result) + '\n');
}

interface ShardBenchFlags {
  rows: number;
  dim: number;
  batch: number;
  seconds: number;
  peer: boolean;
  nats?: boolean;
  url?: string;
}

function shardBench(): Command {
  return new Command('shard')
    .description(
      'row updates/s and bytes/row of the shard store (Adam, dim 16, 1M rows), vs PyTorch SparseAdam',
    )
    .option('--rows <n>', 'rows in the table', int, 1 << 20)
    .option('--dim <n>', 'embedding dimension', int, 16)
    .option('--batch <n>', 'rows per push', int, 8192)
    .option('--seconds <s>', 'measured seconds', num, 3)
    .option('--no-peer', 'skip the PyTorch peer')
    .option('--nats', 'through a real nats-server from a client process: pushes/s, pull p50/p99 (4096 keys)')
    .option('--url <url>', 'with --nats: an existing nats-server (default: start one)')
    .option('--json', 'print one JSON line (the default output)')
    .action(async (o: ShardBenchFlags) => {
      if (o.nats) {
        const url = o.url ? { url: o.url } : {};
        print(
          await (
            await import('@freshet/bench')
          ).runShardNatsBench({ rows: o.rows, dim: o.dim, seconds: o.seconds, ...url }),
        );
        return;
      }
      print(
        await (
          await import('@freshet/bench')
        ).runShardBench({ rows: o.rows, dim: o.dim, batch: o.batch, seconds: o.seconds, peer: o.peer }),
      );
    });
}

function trainBench(): Command {
  return new Command('train')
    .description(
      "the worker's compute path in one process on any dataset `replay` reads, vs the PyTorch peer where one exists",
    )
    .requiredOption(
      '--data <ref>',
      'criteo:PATH | movielens:PATH | obd:PATH | csv:PATH (with --spec) | synthetic[:k=v,...]',
    )
    .option('--spec <file>', 'column mapping for csv: data (JSON; see packages/client/README.md)')
    .option(
      '--model <kind>',
      "lr, fm, wide-deep, deepfm, two-tower, seed, wide-deep-peer (the peer's Criteo model and optimizers exactly), " +
        'or lr-ftrl (lr with sequential FTRL, vs per-example FTRL-Proximal)',
      'wide-deep',
    )
    .option('--seed <n>', 'seed of the embedding and dense initialisation', nonNegativeInt, 0)
    .option('--dim <n>', 'embedding width of models on non-Criteo data', int, 8)
    .option('--limit <n>', 'only the first n labelled examples', int)
    .option('--batch <n>', 'batch size', int, 256)
    .option('--lr <x>', 'learning rate', num, 0.001)
    .option('--passes <n>', 'passes over the data', int, 1)
    .option('--threads <n>', 'compute threads', int, 2)
    .option(
      '--pipeline <n>',
      "batches between pull and apply at once (the worker's maxInFlightBatches; more adds staleness)",
      int,
      1,
    )
    .option(
      '--predictions <file>',
      'write one `prediction,label` line per example, in stream order (progressive)',
    )
    .option('--window <n>', 'add the AUC of consecutive windows of n examples to the JSON', int)
    .option(
      '--dense-part-floats <n>',
      'split dense tensors larger than this into parts (model option densePartFloats; 0: whole)',
      nonNegativeInt,
      0,
    )
    .option('--no-peer', 'skip the PyTorch peer')
    .addOption(peerInitOption())
    .option('--json', 'print one JSON line (the default output)')
    .action(
      async (o: {
        data: string;
        spec?: string;
        model: string;
        seed: number;
        dim: number;
        densePartFloats: number;
        limit?: number;
        batch: number;
        lr: number;
        passes: number;
        threads: number;
        pipeline: number;
        predictions?: string;
        window?: number;
        peer: boolean;
        peerInit: 'freshet' | 'pytorch';
      }) => {
        const bench = await import('@freshet/bench');
        const model = o.model;
        if (!bench.isBenchModel(model))
          throw new InvalidArgumentError(
            `--model ${o.model}: the train bench runs ${bench.benchModels.join(', ')}`,
          );
        print(
          await bench.runTrainBench({
            data: resolveDataRef(o.data, process.env),
            ...(o.spec ? { spec: o.spec } : {}),
            model,
            seed: o.seed,
            dim: o.dim,
            batch: o.batch,
            lr: o.lr,
            passes: o.passes,
            threads: o.threads,
            pipeline: o.pipeline,
            torch: o.peer,
            peerInit: o.peerInit,
            ...(o.limit ? { limit: o.limit } : {}),
            ...(o.predictions ? { predictions: o.predictions } : {}),
            ...(o.window ? { window: o.window } : {}),
            ...(o.densePartFloats ? { overrides: { densePartFloats: o.densePartFloats } } : {}),
          }),
        );
      },
    );
}

function ingestBench(): Command {
  return new Command('ingest')
    .description(
      'events/s through validation and the joiner, and published-and-acked events/s into JetStream',
    )
    .option('--events <n>', 'events through validation + joiner', int, 200_000)
    .option('--publish-events <n>', 'events published to JetStream', int, 50_000)
    .option('--nats <url>', 'an existing nats-server (default: start a local one)')
    .option('--json', 'print one JSON line (the default output)')
    .action(async (o: { events: number; publishEvents: number; nats?: string }) => {
      print(
        await (
          await import('@freshet/bench')
        ).runIngestBench({
          events: o.events,
          publishEvents: o.publishEvents,
          ...(o.nats ? { url: o.nats } : {}),
        }),
      );
    });
}

function serveBench(): Command {
  return new Command('serve')
    .description('rank 100 candidates with a wide-deep model: rps and p50/p99 latency over HTTP and NATS')
    .option('--rate <n>', 'offered requests per second', int, 500)
    .option('--seconds <s>', 'measured seconds per phase', num, 5)
    .option('--candidates <n>', 'candidates per request', int, 100)
    .option('--url <url>', 'an existing nats-server (default: start one)')
    .option(
      '--slices <n>',
      'sliced serving: the node under load holds slice 0 of n, the others run in processes of their own',
      int,
      1,
    )
    .option('--json', 'print one JSON line (the default output)')
    .action(
      async (o: { rate: number; seconds: number; candidates: number; url?: string; slices: number }) => {
        print(
          await (
            await import('@freshet/bench')
          ).runServeBench({
            rate: o.rate,
            seconds: o.seconds,
            candidates: o.candidates,
            slices: o.slices,
            ...(o.url ? { url: o.url } : {}),
          }),
        );
      },
    );
}

function personalizationBench(): Command {
  return new Command('personalization')
    .description(
      'two groups of users with opposite tastes, through publish → worker → shards → serving rank: users ranked right',
    )
    .option('--users <n>', 'users (half always click item A, half item B)', int, 40)
    .option('--requests <n>', 'requests per user (each shows A and B: two labelled examples)', int, 25)
    .option('--model <kind>', "model kind on the local cluster's default fields (user, item, category)", 'fm')
    .option('--url <url>', 'an existing nats-server with JetStream (default: start one)')
    .option('--rankings', "add every user's ranking and A−B gap to the JSON")
    .option('--json', 'print one JSON line (the default output)')
    .action(
      async (o: { users: number; requests: number; model: string; url?: string; rankings?: boolean }) => {
        const [{ runPersonalization }, { defaultModel }] = await Promise.all([
          import('@freshet/bench'),
          import('../cluster-config.js'),
        ]);
        const model = { ...defaultModel, kind: o.model } as unknown as Parameters<
          typeof runPersonalization
        >[0]['model'];
        const { rankings, ...r } = await runPersonalization({
          model,
          users: o.users,
          requests: o.requests,
          ...(o.url ? { url: o.url } : {}),
        });
        print(o.rankings ? { ...r, rankings } : r);
      },
    );
}

export function benchCommand(): Command {
  return new Command('bench')
    .description('benchmarks that print one JSON line each')
    .addCommand(shardBench())
    .addCommand(trainBench())
    .addCommand(ingestBench())
    .addCommand(serveBench())
    .addCommand(clusterBenchCommand())
    .addCommand(scalingBenchCommand())
    .addCommand(wireBenchCommand())
    .addCommand(driftBenchCommand())
    .addCommand(warmBenchCommand())
    .addCommand(ftrlBenchCommand())
    .addCommand(moveBenchCommand())
    .addCommand(opeBenchCommand())
    .addCommand(personalizationBench());
}
