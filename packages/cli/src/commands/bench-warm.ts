import { Command, InvalidArgumentError } from 'commander';
import { nonNegativeInt, positiveInt as int, positiveNumber as num } from '../cli-args.js';
import { resolveDataRef } from '../data-ref.js';

interface WarmFlags {
  data: string;
  model: string;
  trainRows?: number;
  epochs: number;
  batch: number;
  lr: number;
  batchLr?: number;
  warmLrScale: number;
  dim: number;
  seed: number;
  threads: number;
  trainer: string;
  out?: string;
}

function oneOf<T extends string>(values: readonly T[]) {
  return (v: string): T => {
    if (!(values as readonly string[]).includes(v))
      throw new InvalidArgumentError(`one of ${values.join(', ')}`);
    return v as T;
  };
}

/**
 * `freshet bench warm`: a batch model (PyTorch exporter, else Freshet) imported as starting
 * weights vs the frozen batch model and a cold online model on the log's later slice.
 */
export function warmBenchCommand(): Command {
  return new Command('warm')
    .description(
      'warm start: a batch model trained on the head of a Criteo log, imported, then online; progressive ' +
        'AUC/logloss on the tail next to the frozen batch model and a cold online model (one JSON line)',
    )
    .requiredOption('--data <ref>', 'criteo:PATH (a Criteo TSV)')
    .option('--model <kind>', 'lr or fm', oneOf(['lr', 'fm'] as const), 'fm')
    .option('--train-rows <n>', 'examples of the head the batch model trains on (default: half)', int)
    .option('--epochs <n>', 'batch-training passes over the head', int, 1)
    .option('--batch <n>', 'batch size (batch training and online)', int, 64)
    .option('--lr <x>', 'Adam learning rate online', num, 0.003)
    .option('--batch-lr <x>', 'learning rate of the batch trainer (default: --lr)', num)
    .option('--warm-lr-scale <x>', 'learning-rate multiplier of the warm_lower_lr variant', num, 0.5)
    .option('--dim <n>', 'embedding dimension (fm)', int, 16)
    .option('--seed <n>', 'seed', nonNegativeInt, 0)
    .option('--threads <n>', 'compute threads (and PyTorch threads)', int, 2)
    .option(
      '--trainer <t>',
      'batch trainer: auto (PyTorch when available), torch, freshet',
      oneOf(['auto', 'torch', 'freshet'] as const),
      'auto',
    )
    .option('--out <file>', 'keep the warm-start file here')
    .action(async (o: WarmFlags) => {
      const { runWarmStartBench } = await import('../warm-start-bench.js');
      const r = await runWarmStartBench({
        data: resolveDataRef(o.data, process.env),
        model: o.model as 'lr' | 'fm',
        trainRows: o.trainRows,
        epochs: o.epochs,
        batch: o.batch,
        lr: o.lr,
        batchLr: o.batchLr,
        warmLrScale: o.warmLrScale,
        dim: o.dim,
        seed: o.seed,
        threads: o.threads,
        trainer: o.trainer as 'auto' | 'torch' | 'freshet',
        out: o.out,
      });
      process.stdout.write(JSON.stringify(r) + '\n');
    });
}
