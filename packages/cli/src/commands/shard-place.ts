import { Command, InvalidArgumentError } from 'commander';
import type { NatsConnection } from 'nats';
import {
  placementKv,
  planPlacement,
  readLease,
  readPlacement,
  writePlacement,
  type Lease,
  type Placement,
} from '@freshet/nats';
import { FreshetError, shardStatusSubject } from '@freshet/protocol';
import { table, withAdmin } from './common.js';

/**
 * `freshet shard place` and `freshet shard placement` (docs/resharding.md): which shard host runs
 * which shard. `place` writes a new placement (compare-and-set on the KV revision, epoch + 1)
 * that spreads the cluster's shards evenly over the hosts named, moving as few as it can, then
 * waits until every shard runs where the placement says and answers.
 */

export interface PlaceOptions {
  hosts: string[];
  /** The cluster's shard count; needed for the first placement only (then fixed). */
  shards?: number;
  /** Also wait until every moved shard runs and answers (default true). */
  wait?: boolean;
  timeoutMs?: number;
  log?: (line: string) => void;
}

export interface PlaceReport {
  epoch: number;
  shards: number;
  hosts: string[];
  moved: Array<{ shard: number; from: string | null; to: string }>;
  /** When each moved shard answered on its new host (ms after the placement was written). */
  settledMs: Record<string, number>;
  ms: number;
}

export interface ShardWhere {
  shard: number;
  host: string;
  lease: Lease | null;
  /** The shard answered a status request (it runs somewhere). */
  answers: boolean;
  version: number | null;
}

async function answers(
  nc: NatsConnection,
  cluster: string,
  shard: number,
): Promise<{ version: number } | null> {
  try {
    const r = await nc.request(shardStatusSubject(cluster, shard), new Uint8Array(), { timeout: 1000 });
    return JSON.parse(new TextDecoder().decode(r.data)) as { version: number };
  } catch {
    return null;
  }
}

/** Writes the placement of `o.hosts` and (by default) waits until it holds. */
export async function placeShards(
  nc: NatsConnection,
  cluster: string,
  o: PlaceOptions,
): Promise<PlaceReport> {
  const t0 = Date.now();
  const kv = await placementKv(nc, cluster);
  const cur = await readPlacement(kv);
  const shards = cur?.value.hosts.length ?? o.shards;
  if (shards === undefined) {
    throw new FreshetError(
      'BAD_REQUEST',
      `cluster ${cluster} has no shard placement yet: the first one needs --shards N (the shard count workers and serving use)`,
    );
  }
  if (o.shards !== undefined && o.shards !== shards) {
    throw new FreshetError(
      'BAD_REQUEST',
      `cluster ${cluster} has ${shards} shards; the count is fixed (a placement moves shards between hosts)`,
    );
  }
  const hosts = planPlacement(cur?.value, shards, o.hosts);
  const moved = hosts.flatMap((to, shard) => {
    const from = cur?.value.hosts[shard] ?? null;
    return from === to ? [] : [{ shard, from, to }];
  });
  const next: Placement = { epoch: (cur?.value.epoch ?? 0) + 1, hosts, at: Date.now() };
  if (moved.length === 0 && cur) {
    return { epoch: cur.value.epoch, shards, hosts, moved, settledMs: {}, ms: 0 };
  }
  await writePlacement(kv, next, cur?.revision ?? 0);
  o.log?.(`placement epoch ${next.epoch}: ${moved.length} shard(s) to move`);
  const settledMs: Record<string, number> = {};
  if (o.wait !== false) {
    const deadline = t0 + (o.timeoutMs ?? 120_000);
    const pending = new Set(moved.map((m) => m.shard));
    while (pending.size) {
      for (const shard of [...pending]) {
        const lease = await readLease(kv, shard);
        if (lease?.value.holder !== hosts[shard]) continue;
        if (!(await answers(nc, cluster, shard))) continue;
        pending.delete(shard);
        settledMs[String(shard)] = Date.now() - t0;
        o.log?.(`shard ${shard} runs on ${hosts[shard]} (${Date.now() - t0} ms)`);
      }
      if (!pending.size) break;
      if (Date.now() > deadline) {
        const where = await Promise.all(
          [...pending].map(
            async (s) =>
              `${s}: lease ${(await readLease(kv, s))?.value.holder ?? 'free'}, wanted ${hosts[s]}`,
          ),
        );
        throw new FreshetError(
          'TIMEOUT',
          `placement epoch ${next.epoch} written, not settled after ${o.timeoutMs ?? 120_000} ms (${where.join('; ')}): is a shard host named ${[...new Set([...pending].map((s) => hosts[s]))].join(', ')} running?`,
        );
      }
      await new Promise((r) => setTimeout(r, 200));
    }
  }
  return { epoch: next.epoch, shards, hosts, moved, settledMs, ms: Date.now() - t0 };
}

/** Where every shard is placed, who holds its lease, and whether it answers. */
export async function shardPlacement(
  nc: NatsConnection,
  cluster: string,
): Promise<{ epoch: number; shards: ShardWhere[] } | null> {
  const kv = await placementKv(nc, cluster);
  const p = await readPlacement(kv);
  if (!p) return null;
  const shards = await Promise.all(
    p.value.hosts.map(async (host, shard) => {
      const [lease, st] = await Promise.all([readLease(kv, shard), answers(nc, cluster, shard)]);
      return { shard, host, lease: lease?.value ?? null, answers: st !== null, version: st?.version ?? null };
    }),
  );
  return { epoch: p.value.epoch, shards };
}

function count(v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError('expected a positive integer');
  return n;
}

interface Flags {
  nats?: string;
  cluster: string;
  hosts?: string;
  shards?: number;
  wait: boolean;
  timeoutMs: number;
  json?: boolean;
}

export function shardPlaceCommand(): Command {
  return new Command('place')
    .description(
      'Spread the shards evenly over these shard hosts (moves as few as it can) and wait until they run there',
    )
    .requiredOption('--hosts <a,b,...>', 'shard host names (freshet shard-host "host" option)')
    .option('--shards <n>', 'the shard count (first placement only; it is fixed)', count)
    .option('--no-wait', 'write the placement and return')
    .option('--timeout-ms <ms>', 'how long to wait for the moves', count, 120_000)
    .option('--nats <url>', 'NATS server URL(s) (default: $FRESHET_NATS_URL or nats://127.0.0.1:4222)')
    .option('--cluster <name>', 'cluster name', 'local')
    .option('--json', 'print the report as one JSON line')
    .action(async (f: Flags) => {
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
        if (f.json) {
          process.stdout.write(JSON.stringify(r) + '\n');
          return;
        }
        const moves = r.moved.map((m) => `${m.shard}: ${m.from ?? '(new)'} → ${m.to}`).join(', ');
        process.stdout.write(
          r.moved.length
            ? `epoch ${r.epoch}: moved ${moves} in ${r.ms} ms\n`
            : `epoch ${r.epoch}: every shard already runs where it should\n`,
        );
      });
    });
}

export function shardPlacementCommand(): Command {
  return new Command('placement')
    .description('Show which shard host runs which shard, its lease, and whether it answers')
    .option('--nats <url>', 'NATS server URL(s) (default: $FRESHET_NATS_URL or nats://127.0.0.1:4222)')
    .option('--cluster <name>', 'cluster name', 'local')
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
