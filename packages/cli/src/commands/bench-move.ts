import { Command } from 'commander';
import { positiveInt as int } from '../cli-args.js';

interface MoveFlags {
  rows: number;
  dim: number;
  moves: number;
  fsync?: boolean;
}

/** `freshet bench move`: what moving a shard between shard hosts costs (docs/resharding.md). */
export function moveBenchCommand(): Command {
  return new Command('move')
    .description(
      'move one shard between two shard hosts (through the placement) while a client pulls from it: ' +
        'time until it answers on its new host, longest client wait, hand-off and restore times',
    )
    .option('--rows <n>', 'rows of the shard (Adam)', int, 1 << 18)
    .option('--dim <n>', 'embedding width', int, 16)
    .option('--moves <n>', 'moves, back and forth', int, 3)
    .option('--fsync', 'fdatasync checkpoints (the shard default; off here like the shard bench)')
    .option('--json', 'print one JSON line (the default output)')
    .action(async (o: MoveFlags) => {
      const { runMoveBench } = await import('@freshet/bench');
      const r = await runMoveBench({ rows: o.rows, dim: o.dim, moves: o.moves, fsync: o.fsync === true });
      process.stdout.write(JSON.stringify(r) + '\n');
    });
}
