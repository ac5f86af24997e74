import { Command } from 'commander';
import { withAdmin } from './common.js';
import { reportAdmin, sendAdmin, targets } from './admin.js';

interface Flags {
  nats?: string;
  cluster: string;
  actor?: string;
  checkpoint?: string;
  json?: boolean;
  timeoutMs: string;
}

/** `freshet restore`: asks shards to reload their state from a checkpoint (the latest by default). */
export function restoreCommand(): Command {
  return new Command('restore')
    .description(
      'Reload shard state from a checkpoint (latest unless --checkpoint) on every shard or --actor ID',
    )
    .option('--nats <url>', 'NATS server URL(s) (default: $FRESHET_NATS_URL or nats://127.0.0.1:4222)')
    .option('--cluster <name>', 'cluster name', 'local')
    .option('--actor <id>', 'only this actor (e.g. shard-1)')
    .option(
      '--checkpoint <id>',
      'checkpoint id or path the shard understands, or object-store:<object> (an older checkpoint in the Object Store: docs/model-versions.md)',
    )
    .option('--json', 'print results as JSON')
    .option('--timeout-ms <ms>', 'per-actor timeout', '120000')
    .action(async (f: Flags) => {
      await withAdmin(f, 'freshet-restore', async (nc) => {
        const actors = await targets(nc, f.cluster, ['shard'], f.actor);
        const body = f.checkpoint ? { checkpoint: f.checkpoint } : {};
        reportAdmin(
          'restore',
          await sendAdmin(nc, f.cluster, actors, 'restore', body, Number(f.timeoutMs)),
          !!f.json,
        );
      });
    });
}
