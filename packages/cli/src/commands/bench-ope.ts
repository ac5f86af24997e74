import { Command, InvalidArgumentError } from 'commander';
import { nonNegativeInt, positiveInt as int, positiveNumber as num } from '../cli-args.js';
import { resolveDataRef } from '../data-ref.js';

interface OpeFlags {
  data: string;
  spec?: string;
  limit?: number;
  model: string;
  lr: number;
  seed: number;
  dim: number;
  batch: number;
  threads: number;
  policy: string;
  temperature: number;
  clip: number;
}

/**
 * `freshet bench ope`: a model trained progressively on a logged bandit log, its ranking policy's
 * value estimated off-policy (IPS, SNIPS, DR) next to the logging policy, a random ranking and the
 * frozen model. See docs/off-policy.md.
 */
export function opeBenchCommand(): Command {
  return new Command('ope')
    .description(
      'off-policy evaluation on a log with propensities (Open Bandit): the model trained progressively, ' +
        "its ranking's value by IPS, SNIPS and doubly robust vs the logging policy, random and the frozen model",
    )
    .requiredOption('--data <ref>', 'obd:PATH | csv:PATH (with --spec and a propensity column)')
    .option('--spec <file>', 'column mapping for csv: data (JSON; see packages/client/README.md)')
    .option('--limit <n>', 'only the first n logged impressions', int)
    .option('--model <kind>', 'lr, fm, wide-deep, deepfm, two-tower, seed or lr-ftrl', 'lr')
    .option('--lr <x>', 'learning rate', num, 0.01)
    .option('--seed <n>', 'seed of the embedding and dense initialisation', nonNegativeInt, 0)
    .option('--dim <n>', 'embedding width', int, 8)
    .option('--batch <n>', 'batch size (candidates are scored before each batch)', int, 256)
    .option('--threads <n>', 'compute threads', int, 2)
    .option(
      '--policy <mode>',
      'argmax (slot k shows the k-th ranked item) or softmax (Plackett-Luce)',
      'argmax',
    )
    .option('--temperature <x>', 'softmax temperature on the logits', num, 1)
    .option('--clip <x>', 'clip importance weights at this', num, 100)
    .option('--json', 'print one JSON line (the default output)')
    .action(async (o: OpeFlags) => {
      if (o.policy !== 'argmax' && o.policy !== 'softmax')
        throw new InvalidArgumentError(`--policy ${o.policy}: argmax or softmax`);
      const bench = await import('@freshet/bench');
      const model = o.model;
      if (!bench.isBenchModel(model) || model === 'wide-deep-peer')
        throw new InvalidArgumentError(`--model ${o.model}: not a model bench ope trains`);
      const r = await bench.runOpeBench({
        data: resolveDataRef(o.data, process.env),
        ...(o.spec ? { spec: o.spec } : {}),
        ...(o.limit ? { limit: o.limit } : {}),
        model,
        lr: o.lr,
        seed: o.seed,
        dim: o.dim,
        batch: o.batch,
        threads: o.threads,
        policy: o.policy,
        temperature: o.temperature,
        clip: o.clip,
      });
      process.stdout.write(JSON.stringify(r) + '\n');
    });
}
