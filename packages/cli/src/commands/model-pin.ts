import { Command } from 'commander';
import { withAdmin } from './common.js';
import { clusterKv } from './model-tags.js';
import { modelPinKey, unpinModel } from './model-rollback.js';

interface Flags {
  nats?: string;
  cluster: string;
  json?: boolean;
  reason?: string;
}

const common = (c: Command) =>
  c
    .option('--nats <url>', 'NATS server URL(s) (default: $FRESHET_NATS_URL or nats://127.0.0.1:4222)')
    .option('--cluster <name>', 'cluster name', 'local')
    .option('--json', 'print the result as JSON');

/** `freshet model pin`: serving keeps its weights (what the guard does on its own). */
export function modelPinCommand(): Command {
  return common(new Command('pin'))
    .description('Pin serving to the weights it holds now (the guard does this when logloss degrades)')
    .option('--reason <text>', 'why (shown by `freshet status`)', 'pinned by an operator')
    .action(async (f: Flags) => {
      await withAdmin(f, 'freshet-model-pin', async (nc) => {
        const kv = await clusterKv(nc, f.cluster);
        const record = { since: Date.now(), reason: f.reason!, logloss: 0, baseline: 0, by: 'cli' };
        await kv.put(modelPinKey, JSON.stringify(record));
        process.stdout.write(
          f.json ? JSON.stringify({ pinned: record }) + '\n' : `pinned: ${record.reason}\n`,
        );
      });
    });
}

/** `freshet model unpin`: serving follows the shards again (a fresh snapshot of each). */
export function modelUnpinCommand(): Command {
  return common(new Command('unpin'))
    .description('Lift the model pin: serving follows the shards again')
    .action(async (f: Flags) => {
      await withAdmin(f, 'freshet-model-unpin', async (nc) => {
        const was = await unpinModel(await clusterKv(nc, f.cluster));
        if (f.json) process.stdout.write(JSON.stringify({ unpinned: was ?? null }) + '\n');
        else process.stdout.write(was ? `unpinned (was: ${JSON.stringify(was)})\n` : 'not pinned\n');
      });
    });
}
