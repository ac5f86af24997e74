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
      const { ObjectBucket, describeObject, describeSegmentObject } = await import('@freshet/shard');
      const bucket = f.bucket ?? subjects(f.cluster).objectStore;
      await withAdmin({ nats: f.nats, cluster: f.cluster }, 'freshet-shard-checkpoints', async (nc) => {
        const b = await ObjectBucket.open(nc, bucket);
        const records = (await b?.list()) ?? [];
        const mine = (x: { shard: number }) => f.shard === undefined || x.shard === f.shard;
        const list = records
          .flatMap((r) => describeObject(r) ?? [])
          .filter(mine)
          .sort((x, y) => x.shard - y.shard || y.segment - x.segment);
        const segments = records
          .flatMap((r) => describeSegmentObject(r) ?? [])
          .filter(mine)
          .sort((x, y) => x.shard - y.shard || x.segment - y.segment);
        if (f.json) {
          const out = { bucket, exists: b !== undefined, checkpoints: list, segments };
          process.stdout.write(JSON.stringify(out) + '\n');
          return;
        }
        if (!b) {
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
        // the log after each shard's newest checkpoint (checkpoint.walSegmentMs)
        for (const shard of new Set(segments.map((x) => x.shard))) {
          const own = segments.filter((x) => x.shard === shard);
          const last = own[own.length - 1]!;
          process.stdout.write(
            `shard ${shard}: log segments ${own[0]!.segment}-${last.segment} mirrored, up to version ${last.version}\n`,
          );
        }
      });
    });
}
