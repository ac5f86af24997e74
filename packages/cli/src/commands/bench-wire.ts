import { Command, InvalidArgumentError } from 'commander';
import { denseMode, eventEncoding, intList, positiveInt as int } from '../cli-args.js';
import { resolveDataRef } from '../data-ref.js';

interface WireFlags {
  data: string;
  spec?: string;
  shards: number[];
  serving: number[];
  workers: number;
  limit: number;
  model: string;
  batch: number;
  partitions: number;
  dense: 'shard' | 'replica';
  denseSyncExamples: number;
  halfPull?: boolean;
  halfDeltas?: boolean;
  encoding: 'json' | 'msgpack';
}

/**
 * `freshet bench wire`: bytes and messages per example on the bus at each shards × serving
 * configuration, each a short real local cluster, as ONE JSON line (progress on stderr).
 */
export function wireBenchCommand(): Command {
  return new Command('wire')
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
    .option('--limit <n>', 'examples per configuration', int, 3000)
    .option('--model <kind>', 'a model kind `bench cluster` takes', 'wide-deep')
    .option('--batch <n>', 'worker batch size', int, 256)
    .option('--partitions <n>', 'feedback stream partitions', int, 8)
    .option(
      '--dense <mode>',
      'dense tables: shard (per batch) or replica (worker copy, flushed)',
      denseMode,
      'shard',
    )
    .option('--dense-sync-examples <n>', 'examples per dense replica flush', int, 2048)
    .option('--half-pull', 'workers pull embedding rows as binary16')
    .option('--half-deltas', 'shards publish embedding rows in deltas as binary16')
    .option('--encoding <kind>', 'events published as json or msgpack', eventEncoding, 'json')
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
          limit: o.limit,
          model,
          batch: o.batch,
          partitions: o.partitions,
          dense: o.dense,
          denseSyncExamples: o.denseSyncExamples,
          halfPull: o.halfPull === true,
          halfDeltas: o.halfDeltas === true,
          encoding: o.encoding,
          ...(o.spec !== undefined ? { spec: o.spec } : {}),
        },
        { harness: localClusterHarness(), progress: (line) => process.stderr.write(`[bench] ${line}\n`) },
      );
      process.stdout.write(JSON.stringify(r) + '\n');
    });
}
