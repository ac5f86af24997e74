import { Command, InvalidArgumentError } from 'commander';
import { intList, positiveInt as int } from '../cli-args.js';
import { resolveDataRef } from '../data-ref.js';
import { busInput, withBusFlags, type BusFlags } from './bus-flags.js';

interface WireFlags extends BusFlags {
  data: string;
  spec?: string;
  shards: number[];
  serving: number[];
  workers: number;
  shardHosts?: number;
  limit: number;
  model: string;
  batch: number;
  partitions: number;
  backlog?: boolean;
}

/**
 * `freshet bench wire`: bytes and messages per example on the bus at each shards × serving
 * configuration, each a short real local cluster, as ONE JSON line (progress on stderr).
 */
export function wireBenchCommand(): Command {
  return withBusFlags(
    new Command('wire')
      .description(
        'bytes and messages per example on the bus (pull, push, delta, feedback; dense vs sparse) at ' +
          'each shards × serving configuration of a real local cluster, with the 8-vs-2-shard ratios',
      )
      .option(
        '--data <ref>',
        'criteo:PATH | movielens:PATH | obd:PATH | csv:PATH (with --spec) | synthetic[:k=v,...]',
        'synthetic',
      )
      .option('--spec <file>', 'column mapping for csv: data (JSON; see packages/client/README.md)')
      .option('--shards <list>', 'shard process counts, comma-separated', (v) => intList(v, 1), [2, 4, 8])
      .option('--serving <list>', 'serving node counts, comma-separated', (v) => intList(v, 0), [1, 2, 4])
      .option('--workers <n>', 'worker processes', int, 1)
      .option(
        '--shard-hosts <n>',
        "run each configuration's shards on this many shard hosts (at most its shard count)",
        int,
      )
      .option('--limit <n>', 'examples per configuration', int, 3000)
      .option('--model <kind>', 'a model kind `bench cluster` takes', 'wide-deep')
      .option('--batch <n>', 'worker batch size', int, 256)
      .option('--partitions <n>', 'feedback stream partitions', int, 8)
      .option(
        '--backlog',
        "publish each configuration's events first, then train (full batches in stream order: with one " +
          'worker and one partition every configuration learns the same, so AUC compares the layouts alone)',
      ),
  )
    .option('--json', 'print one JSON line (the default output)')
    .action(async (o: WireFlags) => {
      const { runWireBench, isBenchModel, benchModels } = await import('@freshet/bench');
      const model = o.model;
      if (!isBenchModel(model)) throw new InvalidArgumentError(`--model ${benchModels.join('|')}`);
      const { localClusterHarness } = await import('../bench-harness.js');
      const r = await runWireBench(
        {
          data: resolveDataRef(o.data, process.env),
          shards: o.shards,
          serving: o.serving,
          workers: o.workers,
          ...(o.shardHosts !== undefined ? { shardHosts: o.shardHosts } : {}),
          limit: o.limit,
          model,
          batch: o.batch,
          partitions: o.partitions,
          backlog: o.backlog === true,
          ...busInput(o),
          ...(o.spec !== undefined ? { spec: o.spec } : {}),
        },
        { harness: localClusterHarness(), progress: (line) => process.stderr.write(`[bench] ${line}\n`) },
      );
      process.stdout.write(JSON.stringify(r) + '\n');
    });
}
