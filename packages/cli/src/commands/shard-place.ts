import { Command, InvalidArgumentError } from 'commander';
import type { NatsConnection } from 'nats';
import {
  hostNameError,
  placementKv,
  planPlacement,
  readLease,
  readPlacement,
  releaseLease,
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
  const settledMs =
    o.wait === false
      ? {}
      : await waitSettled(
          nc,
          cluster,
          kv,
          next,
          moved.map((m) => m.shard),
          t0,
          o,
        );
  return { epoch: next.epoch, shards, hosts, moved, settledMs, ms: Date.now() - t0 };
}

/**
 * Waits until each of `shards` is held by the host `p` puts it on and answers there. On timeout,
 * says for each shard still moving who holds its lease, and which host to check.
 */
async function waitSettled(
  nc: NatsConnection,
  cluster: string,
  kv: Awaited<ReturnType<typeof placementKv>>,
  p: Placement,
  shards: number[],
  t0: number,
  o: { timeoutMs?: number; log?: (line: string) => void },
): Promise<Record<string, number>> {
  const timeoutMs = o.timeoutMs ?? 120_000;
  const settledMs: Record<string, number> = {};
  const pending = new Set(shards);
  for (;;) {
    for (const shard of [...pending]) {
      const lease = await readLease(kv, shard);
      if (lease?.value.holder !== p.hosts[shard]) continue;
      if (!(await answers(nc, cluster, shard))) continue;
      pending.delete(shard);
      settledMs[String(shard)] = Date.now() - t0;
      o.log?.(`shard ${shard} runs on ${p.hosts[shard]} (${Date.now() - t0} ms)`);
    }
    if (!pending.size) return settledMs;
    if (Date.now() - t0 > timeoutMs) {
      const where = await Promise.all(
        [...pending].map(
          async (s) =>
            `shard ${s}: lease ${(await readLease(kv, s))?.value.holder ?? 'free'}, wanted on ${p.hosts[s]}`,
        ),
      );
      const hosts = [...new Set([...pending].map((s) => p.hosts[s]))].join(', ');
      throw new FreshetError(
        'TIMEOUT',
        `placement epoch ${p.epoch} written, not settled after ${timeoutMs} ms (${where.join('; ')}): ` +
          `is a shard host named ${hosts} running? (\`freshet shard placement\` shows where each shard is)`,
      );
    }
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** Moves one shard to `to` (a placement with that one change) and, by default, waits for it. */
export async function moveShard(
  nc: NatsConnection,
  cluster: string,
  shard: number,
  to: string,
  o: Omit<PlaceOptions, 'hosts' | 'shards'> = {},
): Promise<PlaceReport> {
  const t0 = Date.now();
  const bad = hostNameError(to);
  if (bad) throw new FreshetError('BAD_REQUEST', bad);
  const kv = await placementKv(nc, cluster);
  const cur = await readPlacement(kv);
  if (!cur)
    throw new FreshetError(
      'BAD_REQUEST',
      `cluster ${cluster} has no shard placement: run \`freshet shard place\` first`,
    );
  const shards = cur.value.hosts.length;
  if (!Number.isInteger(shard) || shard < 0 || shard >= shards) {
    throw new FreshetError('BAD_REQUEST', `shard ${shard}: cluster ${cluster} has shards 0-${shards - 1}`);
  }
  const from = cur.value.hosts[shard]!;
  if (from === to)
    return { epoch: cur.value.epoch, shards, hosts: cur.value.hosts, moved: [], settledMs: {}, ms: 0 };
  const hosts = cur.value.hosts.map((h, i) => (i === shard ? to : h));
  const next: Placement = { epoch: cur.value.epoch + 1, hosts, at: Date.now() };
  await writePlacement(kv, next, cur.revision);
  o.log?.(`placement epoch ${next.epoch}: shard ${shard} ${from} → ${to}`);
  const settledMs = o.wait === false ? {} : await waitSettled(nc, cluster, kv, next, [shard], t0, o);
  return { epoch: next.epoch, shards, hosts, moved: [{ shard, from, to }], settledMs, ms: Date.now() - t0 };
}

/**
 * Frees the lease of a shard whose host is gone for good (its volume lost), so the shard's next
 * host restores it from the Object Store: the newest checkpoint and the log segments mirrored
 * after it. What its log held after the last mirrored segment (up to `walSegmentMs`) is lost,
 * which is why this is never automatic. Refused while the shard answers (its host runs: move it).
 */
export async function forceReleaseShard(
  nc: NatsConnection,
  cluster: string,
  shard: number,
): Promise<{ shard: number; holder: string | null }> {
  const kv = await placementKv(nc, cluster);
  const lease = await readLease(kv, shard);
  const holder = lease?.value.holder ?? null;
  if (holder === null) return { shard, holder };
  if (await answers(nc, cluster, shard)) {
    throw new FreshetError(
      'BAD_REQUEST',
      `shard ${shard} answers (host ${holder} runs it): move it with \`freshet shard move\` instead`,
    );
  }
  const p = await readPlacement(kv);
  await releaseLease(kv, shard, holder, p?.value.epoch ?? lease!.value.epoch);
  return { shard, holder };
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
        printReport(r, f.json);
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
  return new Command('move')
    .description('Move one shard to another shard host and wait until it runs there')
    .requiredOption('--shard <n>', 'shard index', index)
    .requiredOption('--to <host>', 'the shard host that takes it')
    .option('--no-wait', 'write the placement and return')
    .option('--timeout-ms <ms>', 'how long to wait for the move', count, 120_000)
    .option('--nats <url>', 'NATS server URL(s) (default: $FRESHET_NATS_URL or nats://127.0.0.1:4222)')
    .option('--cluster <name>', 'cluster name', 'local')
    .option('--json', 'print the report as one JSON line')
    .action(async (f: Flags) => {
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
  return new Command('release')
    .description(
      'Free the lease of a shard whose host is gone for good: its next host restores it from the Object Store (the log after the last mirrored segment is lost)',
    )
    .requiredOption('--shard <n>', 'shard index', index)
    .option('--force', 'required: says you accept losing what was not mirrored')
    .option('--nats <url>', 'NATS server URL(s) (default: $FRESHET_NATS_URL or nats://127.0.0.1:4222)')
    .option('--cluster <name>', 'cluster name', 'local')
    .action(async (f: Flags) => {
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
