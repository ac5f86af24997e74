import { Command } from 'commander';
import { withAdmin } from './common.js';
import { reportAdmin, sendAdmin, targets } from './admin.js';

interface Flags {
  nats?: string;
  cluster: string;
  actor?: string;
  json?: boolean;
  timeoutMs: string;
}

/** `freshet checkpoint`: asks every shard (or one actor) to write a checkpoint now. */
export function checkpointCommand(): Command {
  return new Command('checkpoint')
    .description('Write a checkpoint now on every shard (or --actor ID)')
    .option('--nats <url>', 'NATS server URL(s) (default: $FRESHET_NATS_URL or nats://127.0.0.1:4222)')
    .option('--cluster <name>', 'cluster name', 'local')
    .option('--actor <id>', 'only this actor (e.g. shard-1)')
    .option('--json', 'print results as JSON')
    .option('--timeout-ms <ms>', 'per-actor timeout', '60000')
    .action(async (f: Flags) => {
      await withAdmin(f, 'freshet-checkpoint', async (nc) => {
        const actors = await targets(nc, f.cluster, ['shard'], f.actor);
        reportAdmin(
          'checkpoint',
          await sendAdmin(nc, f.cluster, actors, 'checkpoint', {}, Number(f.timeoutMs)),
          !!f.json,
        );
      });
    });
}
