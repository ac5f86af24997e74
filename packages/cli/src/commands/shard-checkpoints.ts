import { Command, InvalidArgumentError } from 'commander';
import { subjects } from '@freshet/protocol';
import { fmt, table, withAdmin } from './common.js';

interface Flags {
  nats?: string;
  cluster: string;
  bucket?: string;
  shard?: number;
  json?: boolean;
}

function index(v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0) throw new InvalidArgumentError('expected a shard index (0, 1, ...)');
  return n;
}

/**
 * `freshet shard checkpoints`: the shard checkpoints in the cluster's JetStream Object Store,
 * newest first per shard, with their log positions (docs/checkpoints.md). Reads only: a bucket
 * that does not exist is reported, not created.
 */
export function shardCheckpointsCommand(): Command {
  return new Command('checkpoints')
    .description("List the shards' checkpoints in the cluster's JetStream Object Store")
    .option('--nats <url>', 'NATS server URL(s) (default: $FRESHET_NATS_URL or nats://127.0.0.1:4222)')
    .option('--cluster <name>', 'cluster name', 'local')
    .option('--bucket <name>', "bucket (default: the cluster's, freshet_ckpt_<cluster>)")
    .option('--shard <n>', 'only this shard index', index)
    .option('--json', 'print the list as JSON')
    .action(async (f: Flags) => {
      // the shard package (optimizers, row store) only once the command runs
      const { listBucketCheckpoints } = await import('@freshet/shard');
      const bucket = f.bucket ?? subjects(f.cluster).objectStore;
      await withAdmin({ nats: f.nats, cluster: f.cluster }, 'freshet-shard-checkpoints', async (nc) => {
        const all = await listBucketCheckpoints(nc, bucket);
        const list = (all ?? []).filter((c) => f.shard === undefined || c.shard === f.shard);
        if (f.json) {
          process.stdout.write(
            JSON.stringify({ bucket, exists: all !== undefined, checkpoints: list }) + '\n',
          );
          return;
        }
        if (!all) {
          process.stdout.write(
            `no bucket ${bucket}: no shard of cluster ${f.cluster} has uploaded a checkpoint ` +
              `(shard option checkpoint.store "object-store")\n`,
          );
          return;
        }
        const rows = list.map((c) => [
          String(c.shard),
          String(c.segment),
          String(c.version),
          String(c.deltaSeq),
          fmt.bytes(c.bytes),
          new Date(c.createdAt).toISOString(),
          c.sha256.slice(0, 12),
          c.problem ?? 'ok',
        ]);
        process.stdout.write(
          table(['shard', 'segment', 'version', 'deltaSeq', 'size', 'created', 'sha256', 'state'], rows) +
            '\n',
        );
      });
    });
}
