import { Command, InvalidArgumentError } from 'commander';
import {
  forceReleaseShard,
  moveShard,
  placeShards,
  shardPlacement,
  type PlaceReport,
} from '../shard-placement-ops.js';
import { table, withAdmin } from './common.js';
import { FreshetError } from '@freshet/protocol';

/**
 * `freshet shard place|move|placement|release` (docs/resharding.md): the placement operations of
 * shard-placement-ops.ts as commands, one per operator step.
 */

/** --nats and --cluster, as every admin command takes them. */
function clusterFlags(c: Command): Command {
  return c
    .option('--nats <url>', 'NATS server URL(s) (default: $FRESHET_NATS_URL or nats://127.0.0.1:4222)')
    .option('--cluster <name>', 'cluster name', 'local');
}

/** --no-wait, --timeout-ms and --json of the commands that move shards. */
function moveFlags(c: Command): Command {
  return clusterFlags(c)
    .option('--no-wait', 'write the placement and return')
    .option('--timeout-ms <ms>', 'how long to wait for the moves', count, 120_000)
    .option('--json', 'print the report as one JSON line');
}

function count(v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError('expected a positive integer');
  return n;
}

function index(v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0) throw new InvalidArgumentError('expected a shard index (0, 1, ...)');
  return n;
}

interface Flags {
  nats?: string;
  cluster: string;
  hosts?: string;
  shard?: number;
  to?: string;
  force?: boolean;
  shards?: number;
  wait: boolean;
  timeoutMs: number;
  json?: boolean;
}

export function shardPlaceCommand(): Command {
  return moveFlags(
    new Command('place')
      .description(
        'Spread the shards evenly over these shard hosts (moves as few as it can) and wait until they run there',
      )
      .requiredOption('--hosts <a,b,...>', 'shard host names (freshet shard-host "host" option)')
      .option('--shards <n>', 'the shard count (first placement only; it is fixed)', count),
  ).action(async (f: Flags) => {
    const hosts = f
      .hosts!.split(',')
      .map((h) => h.trim())
      .filter(Boolean);
    await withAdmin({ nats: f.nats, cluster: f.cluster }, 'freshet-shard-place', async (nc) => {
      const r = await placeShards(nc, f.cluster, {
        hosts,
        shards: f.shards,
        wait: f.wait,
        timeoutMs: f.timeoutMs,
        log: f.json ? undefined : (l) => process.stderr.write(`${l}\n`),
      });
      printReport(r, f.json);
    });
  });
}

export function shardPlacementCommand(): Command {
  return clusterFlags(
    new Command('placement').description(
      'Show which shard host runs which shard, its lease, and whether it answers',
    ),
  )
    .option('--json', 'print it as one JSON line')
    .action(async (f: Flags) => {
      await withAdmin({ nats: f.nats, cluster: f.cluster }, 'freshet-shard-placement', async (nc) => {
        const p = await shardPlacement(nc, f.cluster);
        if (f.json) {
          process.stdout.write(JSON.stringify(p) + '\n');
          return;
        }
        if (!p) {
          process.stdout.write(
            `cluster ${f.cluster} has no shard placement (its shards run as one process each, or run \`freshet shard place\`)\n`,
          );
          return;
        }
        const rows = p.shards.map((s) => [
          String(s.shard),
          s.host,
          s.lease?.holder ?? '(released)',
          s.answers ? 'yes' : 'no',
          s.version === null ? '–' : String(s.version),
        ]);
        process.stdout.write(
          `epoch ${p.epoch}\n${table(['shard', 'placed on', 'lease', 'answers', 'version'], rows)}\n`,
        );
      });
    });
}

function printReport(r: PlaceReport, json: boolean | undefined): void {
  if (json) {
    process.stdout.write(JSON.stringify(r) + '\n');
    return;
  }
  const moves = r.moved.map((m) => `${m.shard}: ${m.from ?? '(new)'} → ${m.to}`).join(', ');
  process.stdout.write(
    r.moved.length
      ? `epoch ${r.epoch}: moved ${moves} in ${r.ms} ms\n`
      : `epoch ${r.epoch}: every shard already runs where it should\n`,
  );
}

export function shardMoveCommand(): Command {
  return moveFlags(
    new Command('move')
      .description('Move one shard to another shard host and wait until it runs there')
      .requiredOption('--shard <n>', 'shard index', index)
      .requiredOption('--to <host>', 'the shard host that takes it'),
  ).action(async (f: Flags) => {
    await withAdmin({ nats: f.nats, cluster: f.cluster }, 'freshet-shard-move', async (nc) => {
      const r = await moveShard(nc, f.cluster, f.shard!, f.to!, {
        wait: f.wait,
        timeoutMs: f.timeoutMs,
        log: f.json ? undefined : (l) => process.stderr.write(`${l}\n`),
      });
      printReport(r, f.json);
    });
  });
}

export function shardReleaseCommand(): Command {
  return clusterFlags(
    new Command('release')
      .description(
        'Free the lease of a shard whose host is gone for good: its next host restores it from the Object Store (the log after the last mirrored segment is lost)',
      )
      .requiredOption('--shard <n>', 'shard index', index)
      .option('--force', 'required: says you accept losing what was not mirrored'),
  ).action(async (f: Flags) => {
    if (!f.force) {
      throw new FreshetError(
        'BAD_REQUEST',
        'release takes --force: the shard restarts from the Object Store alone, without what its lost host logged after the last mirrored segment',
      );
    }
    await withAdmin({ nats: f.nats, cluster: f.cluster }, 'freshet-shard-release', async (nc) => {
      const r = await forceReleaseShard(nc, f.cluster, f.shard!);
      process.stdout.write(
        r.holder
          ? `shard ${r.shard}: lease of ${r.holder} released; its next host restores it from the Object Store\n`
          : `shard ${r.shard}: nobody holds its lease\n`,
      );
    });
  });
}
