import { Command } from 'commander';
import { positiveInt as int, positiveNumber as num } from '../cli-args.js';

interface DriftFlags {
  seed: number;
  users: number;
  items: number;
  requests: number;
  driftFraction: number;
  batch: number;
  lr: number;
  dim: number;
  window: number;
  threads: number;
  peer: boolean;
}

/**
 * `freshet bench drift`: a synthetic world whose users flip taste halfway through; Freshet's
 * trainer on the peer's FM vs the PyTorch FM peer, same examples, order, batch and rate.
 */
export function driftBenchCommand(): Command {
  return new Command('drift')
    .description(
      'adaptation to a taste change (half the users flip at the midpoint): pre/min/final rolling AUC and ' +
        'recovery, Freshet vs a PyTorch FM in the same run',
    )
    .option('--seed <n>', 'world seed', int, 1)
    .option('--users <n>', 'users', int, 200)
    .option('--items <n>', 'items', int, 100)
    .option('--requests <n>', 'requests (5 labelled impressions each)', int, 24_000)
    .option('--drift-fraction <x>', 'share of users whose taste flips', num, 0.5)
    .option('--batch <n>', 'batch size', int, 32)
    .option('--lr <x>', 'Adam learning rate (both sides)', num, 0.01)
    .option('--dim <n>', 'embedding dimension', int, 8)
    .option('--window <n>', 'rolling AUC window (examples)', int, 4000)
    .option('--threads <n>', 'compute threads (and PyTorch threads)', int, 2)
    .option('--no-peer', 'skip the PyTorch peer')
    .option('--json', 'print one JSON line (the default output)')
    .action(async (o: DriftFlags) => {
      const { runDriftBench } = await import('@freshet/bench');
      const r = await runDriftBench({
        seed: o.seed,
        users: o.users,
        items: o.items,
        requests: o.requests,
        driftFraction: o.driftFraction,
        batch: o.batch,
        lr: o.lr,
        dim: o.dim,
        window: o.window,
        threads: o.threads,
        torch: o.peer,
      });
      process.stdout.write(JSON.stringify(r) + '\n');
    });
}
