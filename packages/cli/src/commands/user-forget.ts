import { Command, InvalidArgumentError } from 'commander';
import type { NatsConnection } from 'nats';
import { FreshetError, forgottenUserKey, subjects, type AdminRequest } from '@freshet/protocol';
import type { HostedShard } from '@freshet/shard';
import type { Worker } from '@freshet/worker';
import { discoverActors } from '../discovery.js';
import type { AdminHandler } from '../role-admin.js';
import { sendAdmin, type AdminResult } from './admin.js';
import { withAdmin } from './common.js';

/**
 * `freshet user forget ID` (docs/privacy.md): records the deletion in the cluster KV
 * (`forgotten.<hash>`: workers started later load it), tells every worker (drop the user's
 * events from now on, and what the joiners hold for it), then every shard (evict the user's rows
 * through the logged expiry path: tombstones reach serving with the next delta). The shards are
 * asked twice, `settleMs` apart: a batch already computed when the workers heard of it may still
 * push the user's rows back once.
 */

function need(req: AdminRequest): string {
  if (!req.user) throw new FreshetError('BAD_REQUEST', 'forget needs {"user": "<id>"}', { retryable: false });
  return req.user;
}

/** The shard's `forget` admin handler: `{user, fields?}` → rows removed per table. */
export function shardForgetHandler(shard: Pick<HostedShard, 'forgetUser'>): AdminHandler {
  return async (req) => ({ removed: await shard.forgetUser(need(req), req.fields ?? ['user']) });
}

/**
 * The worker's `forget` admin handler: `{user}` → joiner state dropped, and the model's
 * `hashBuckets` when its rows are shared (the shards cannot remove a user's part of them).
 */
export function workerForgetHandler(worker: Worker): AdminHandler {
  return (req) => {
    const joiner = worker.forgetUser(need(req));
    const hashBuckets = worker.hashBuckets;
    return Promise.resolve(hashBuckets === undefined ? { joiner } : { joiner, hashBuckets });
  };
}

export interface ForgetOptions {
  /** Categorical fields whose value is the user id (default `user`, what the joiner fills in). */
  fields?: string[];
  /** Wait between the two passes over the shards (ms). */
  settleMs?: number;
  timeoutMs?: number;
}

/** What `forget` did. */
export interface ForgetReport {
  user: string;
  kvKey: string;
  /** Rows removed per shard and table, both passes summed. */
  shards: Record<string, Record<string, number>>;
  /** Joiner state dropped per worker. */
  workers: Record<string, Record<string, unknown>>;
  /** Actors that failed (the command exits 1; rerunning it is safe). */
  failed: AdminResult[];
  /**
   * Why some of the user's rows could not be removed (the command exits 1): a model whose values
   * share rows (`hashBuckets`) keeps the user's contribution in rows other values use.
   */
  notRemovable: string[];
}

/** Records the deletion and tells every shard and worker (see the module comment). */
export async function forgetUser(
  nc: NatsConnection,
  cluster: string,
  user: string,
  o: ForgetOptions = {},
): Promise<ForgetReport> {
  if (!user) throw new FreshetError('BAD_REQUEST', 'a user id is required');
  const fields = o.fields ?? ['user'];
  const timeoutMs = o.timeoutMs ?? 30_000;
  const bucket = subjects(cluster).kvBucket;
  const kv = await nc.jetstream().views.kv(bucket, { bindOnly: true });
  try {
    await kv.status();
  } catch (e) {
    throw new FreshetError('CONFIG', `no KV bucket ${bucket}: run \`freshet init\` for cluster ${cluster}`, {
      cause: e,
    });
  }
  const kvKey = forgottenUserKey(user);
  // first: a worker that starts (or restarts) from here on already drops the user's events
  await kv.put(kvKey, JSON.stringify({ at: new Date().toISOString(), fields }));

  const actors = await discoverActors(nc, { cluster });
  const shards = actors.filter((a) => a.role === 'shard');
  const workers = actors.filter((a) => a.role === 'worker');
  if (shards.length === 0) {
    throw new FreshetError(
      'UNAVAILABLE',
      `no shard running in cluster "${cluster}": the deletion is recorded (${kvKey}) but no rows were removed; rerun once the shards are up`,
    );
  }
  const report: ForgetReport = { user, kvKey, shards: {}, workers: {}, failed: [], notRemovable: [] };
  for (const r of await sendAdmin(nc, cluster, workers, 'forget', { user }, timeoutMs)) {
    if (!r.ok) {
      report.failed.push(r);
      continue;
    }
    report.workers[r.id] = r.detail ?? {};
    const buckets = r.detail?.hashBuckets;
    if (typeof buckets === 'number' && report.notRemovable.length === 0)
      report.notRemovable.push(
        `the model hashes every value into ${buckets} shared rows (hashBuckets, reported by ${r.id}): ` +
          "the user's rows are shared with other values and stay; its events are dropped from now on",
      );
  }
  const pass = async () => {
    for (const r of await sendAdmin(nc, cluster, shards, 'forget', { user, fields }, timeoutMs)) {
      if (!r.ok) {
        report.failed.push(r);
        continue;
      }
      const per = (report.shards[r.id] ??= {});
      const removed = (r.detail?.removed ?? {}) as Record<string, number>;
      for (const [table, n] of Object.entries(removed)) per[table] = (per[table] ?? 0) + n;
    }
  };
  await pass();
  if ((o.settleMs ?? 2000) > 0) {
    await new Promise((r) => setTimeout(r, o.settleMs ?? 2000));
    await pass();
  }
  return report;
}

interface Flags {
  nats?: string;
  cluster: string;
  field?: string[];
  settleMs: string;
  timeoutMs: string;
  json?: boolean;
}

function ms(v: string): string {
  if (!/^\d+$/.test(v)) throw new InvalidArgumentError('expected milliseconds (an integer ≥ 0)');
  return v;
}

/** `freshet user forget ID`. */
export function userCommand(): Command {
  const user = new Command('user').description('Per-user operations (privacy: docs/privacy.md)');
  user
    .command('forget')
    .description("Remove a user's rows from shards and serving, and drop its events from now on")
    .argument('<id>', 'the user id, as events carry it')
    .option('--nats <url>', 'NATS server URL(s) (default: $FRESHET_NATS_URL or nats://127.0.0.1:4222)')
    .option('--cluster <name>', 'cluster name', 'local')
    .option(
      '--field <name>',
      'a categorical field whose value is the user id (repeatable; default: user)',
      (v: string, prev: string[] | undefined) => [...(prev ?? []), v],
    )
    .option('--settle-ms <ms>', 'wait before the second pass over the shards', ms, '2000')
    .option('--timeout-ms <ms>', 'per-actor timeout', ms, '30000')
    .option('--json', 'print the report as JSON')
    .action(async (id: string, f: Flags) => {
      await withAdmin(f, 'freshet-user-forget', async (nc) => {
        const r = await forgetUser(nc, f.cluster, id, {
          fields: f.field,
          settleMs: Number(f.settleMs),
          timeoutMs: Number(f.timeoutMs),
        });
        if (f.json) process.stdout.write(JSON.stringify(r) + '\n');
        else {
          process.stdout.write(`recorded ${r.kvKey}\n`);
          for (const [id, per] of Object.entries(r.shards)) {
            const total = Object.values(per).reduce((a, b) => a + b, 0);
            process.stdout.write(`forget ${id}: removed ${total} rows ${JSON.stringify(per)}\n`);
          }
          for (const [id, d] of Object.entries(r.workers))
            process.stdout.write(`forget ${id}: joiner ${JSON.stringify(d.joiner ?? {})}\n`);
          for (const e of r.failed)
            process.stdout.write(`forget ${e.id}: FAILED [${e.error?.code}] ${e.error?.message}\n`);
          for (const why of r.notRemovable) process.stdout.write(`forget: NOT REMOVED: ${why}\n`);
        }
        if (r.failed.length > 0 || r.notRemovable.length > 0) process.exitCode = 1;
      });
    });
  return user;
}
