import { Command } from 'commander';
import { withAdmin } from './common.js';
import { reportAdmin, sendAdmin, targets } from './admin.js';

interface Flags {
  nats?: string;
  cluster: string;
  json?: boolean;
  timeoutMs: string;
}

/**
 * `freshet drain <actor>`: the actor stops taking work, finishes or hands back what it holds
 * (a worker releases its partitions to the others) and stops.
 */
export function drainCommand(): Command {
  return new Command('drain')
    .description('Drain one actor: stop taking work, hand back in-flight work, stop')
    .argument('<actor>', 'actor id as `freshet status` shows it (e.g. worker-0, shard-1)')
    .option('--nats <url>', 'NATS server URL(s) (default: $FRESHET_NATS_URL or nats://127.0.0.1:4222)')
    .option('--cluster <name>', 'cluster name', 'local')
    .option('--json', 'print results as JSON')
    .option('--timeout-ms <ms>', 'how long the actor may take', '60000')
    .action(async (actor: string, f: Flags) => {
      await withAdmin(f, 'freshet-drain', async (nc) => {
        const actors = await targets(nc, f.cluster, ['shard', 'worker', 'serving'], actor);
        const timeoutMs = Number(f.timeoutMs);
        reportAdmin(
          'drain',
          await sendAdmin(nc, f.cluster, actors, 'drain', { timeoutMs }, timeoutMs + 5000),
          !!f.json,
        );
      });
    });
}
