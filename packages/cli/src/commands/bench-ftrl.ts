import { Command } from 'commander';
import { intList, nonNegativeNumber, positiveInt as int, positiveNumber as num } from '../cli-args.js';
import { resolveDataRef } from '../data-ref.js';

interface FtrlFlags {
  data: string;
  spec?: string;
  limit?: number;
  batch: number[];
  alpha?: number;
  beta?: number;
  l1?: number;
  l2?: number;
  threads: number;
}

/**
 * `freshet bench ftrl`: the lr model with FTRL, Freshet at each batch size (per example on the
 * workers, the default, and the batch's summed gradient) against per-example FTRL-Proximal.
 */
export function ftrlBenchCommand(): Command {
  return new Command('ftrl')
    .description(
      'the lr model with FTRL on any dataset `replay` reads: Freshet at each batch size vs per-example ' +
        'FTRL-Proximal on the same inputs in the same order (progressive AUC, gap)',
    )
    .requiredOption(
      '--data <ref>',
      'criteo:PATH | movielens:PATH | obd:PATH | csv:PATH (with --spec) | synthetic[:k=v,...]',
    )
    .option('--spec <file>', 'column mapping for csv: data (JSON; see packages/client/README.md)')
    .option('--limit <n>', 'only the first n labelled examples', int)
    .option('--batch <list>', "Freshet's batch sizes, comma-separated", (v) => intList(v, 1), [256])
    .option('--alpha <x>', 'FTRL alpha (per example)', num)
    .option('--beta <x>', 'FTRL beta', nonNegativeNumber)
    .option('--l1 <x>', 'FTRL l1', nonNegativeNumber)
    .option('--l2 <x>', 'FTRL l2', nonNegativeNumber)
    .option('--threads <n>', 'compute threads', int, 2)
    .option('--json', 'print one JSON line (the default output)')
    .action(async (o: FtrlFlags) => {
      const { runFtrlBench } = await import('@freshet/bench');
      const ftrl = Object.fromEntries(
        (['alpha', 'beta', 'l1', 'l2'] as const).filter((k) => o[k] !== undefined).map((k) => [k, o[k]]),
      );
      const r = await runFtrlBench({
        data: resolveDataRef(o.data, process.env),
        ...(o.spec ? { spec: o.spec } : {}),
        ...(o.limit ? { limit: o.limit } : {}),
        batches: o.batch,
        ftrl,
        threads: o.threads,
      });
      process.stdout.write(JSON.stringify(r) + '\n');
    });
}
