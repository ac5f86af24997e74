import { Command } from 'commander';
import type { NatsConnection } from 'nats';
import { FreshetError, subjects } from '@freshet/protocol';
import { sendAdmin, targets } from './admin.js';
import { fmt, table, withAdmin } from './common.js';
import {
  checkTagName,
  clusterKv,
  listTags,
  modelTagPrefix,
  pollFor,
  readTag,
  type ModelTag,
} from './model-tags.js';

interface Flags {
  nats?: string;
  cluster: string;
  json?: boolean;
  timeoutMs: string;
}

const common = (c: Command) =>
  c
    .option('--nats <url>', 'NATS server URL(s) (default: $FRESHET_NATS_URL or nats://127.0.0.1:4222)')
    .option('--cluster <name>', 'cluster name', 'local')
    .option('--json', 'print the result as JSON');

/** The shard index of a live shard actor (its service metadata, else its id `shard-<n>`). */
function shardIndex(a: { id: string; metadata: Record<string, string> }): number {
  const v = a.metadata.shard ?? /^shard-(\d+)$/.exec(a.id)?.[1];
  if (v === undefined) throw new FreshetError('INTERNAL', `cannot tell the shard index of ${a.id}`);
  return Number(v);
}

/**
 * Takes a tag: every shard checkpoints now (admin `checkpoint`), each checkpoint is awaited in
 * the Object Store and marked with the tag (so keep-N never deletes it), then the record goes to
 * the KV. A tag is all shards or nothing: one shard missing or failing refuses it.
 */
export async function takeTag(
  nc: NatsConnection,
  cluster: string,
  name: string,
  timeoutMs: number,
): Promise<ModelTag> {
  checkTagName(name);
  const kv = await clusterKv(nc, cluster);
  if (await readTag(kv, name)) {
    throw new FreshetError('BAD_REQUEST', `tag ${name} exists: \`freshet model untag ${name}\` first`, {
      retryable: false,
    });
  }
  const shards = await targets(nc, cluster, ['shard']);
  const count = Number(shards[0]!.metadata.shards ?? shards[0]!.status.shards);
  const have = new Set(shards.map(shardIndex));
  const missing = Array.from({ length: count }, (_, i) => i).filter((i) => !have.has(i));
  if (missing.length > 0) {
    throw new FreshetError(
      'UNAVAILABLE',
      `shard(s) ${missing.join(', ')} of ${count} not running: no tag taken`,
    );
  }
  const { ObjectBucket, checkpointObjectName, describeObject } = await import('@freshet/shard');
  // consumer positions before and after the checkpoints: equal and quiet means the checkpoints
  // hold exactly the events up to them (see consumerCut)
  const before = await consumerCut(nc, cluster);
  const results = await sendAdmin(nc, cluster, shards, 'checkpoint', {}, timeoutMs);
  const failed = results.filter((r) => !r.ok);
  if (failed.length > 0) {
    throw new FreshetError(
      'UNAVAILABLE',
      `checkpoint failed on ${failed.map((r) => `${r.id} [${r.error?.code}] ${r.error?.message}`).join('; ')}`,
    );
  }
  const bucketName = subjects(cluster).objectStore;
  const bucket = await ObjectBucket.open(nc, bucketName);
  if (!bucket) {
    throw new FreshetError(
      'CONFIG',
      `no Object Store bucket ${bucketName}: tags need shards with checkpoint.store 'object-store'`,
    );
  }
  const checkpoints: ModelTag['checkpoints'] = [];
  for (const r of results) {
    const shard = shardIndex(shards.find((a) => a.id === r.id)!);
    const object = checkpointObjectName(shard, Number(r.detail?.segment));
    // the upload runs in the background after the checkpoint: wait for it
    const info = await pollFor(
      async () => {
        const rec = await bucket.info(object);
        return rec && !rec.deleted ? rec : null;
      },
      timeoutMs,
      `${object} in the Object Store (shard option checkpoint.store 'object-store'?)`,
    );
    const tags = await bucket.retag(object, [name]);
    if (!tags)
      throw new FreshetError('UNAVAILABLE', `${object} was deleted before the tag marked it; try again`);
    const c = describeObject(info)!;
    if (c.problem) throw new FreshetError('BAD_FRAME', `${object}: ${c.problem}`);
    checkpoints.push({
      shard,
      object,
      segment: c.segment,
      version: c.version,
      deltaSeq: c.deltaSeq,
      sha256: c.sha256,
    });
  }
  checkpoints.sort((a, b) => a.shard - b.shard);
  const after = await consumerCut(nc, cluster);
  const moved = after.consumers.filter((c) => {
    const b = before.consumers.find((x) => x.name === c.name);
    return !b || b.ackFloor !== c.ackFloor;
  });
  const why =
    before.busy ??
    after.busy ??
    (moved.length > 0
      ? `consumer(s) ${moved.map((c) => c.name).join(', ')} acknowledged events while the checkpoints were taken`
      : undefined);
  const tag: ModelTag = {
    name,
    createdAt: Date.now(),
    model: shards[0]!.metadata.model ?? '',
    shards: count,
    bucket: bucketName,
    checkpoints,
    stream: { name: subjects(cluster).feedbackStream, lastSeq: before.lastSeq },
    consumers: before.consumers,
    replayable: why === undefined,
    ...(why ? { why } : {}),
  };
  await kv.create(modelTagPrefix + name, JSON.stringify(tag));
  return tag;
}

/**
 * Where the feedback stream's durable consumers stand, and why that is not a clean cut (`busy`):
 * events delivered and not yet acknowledged (a batch in flight, or a joiner holding impressions
 * for their attribution window) may or may not be in a checkpoint taken now.
 */
async function consumerCut(
  nc: NatsConnection,
  cluster: string,
): Promise<{ lastSeq: number; consumers: ModelTag['consumers']; busy?: string }> {
  const jsm = await nc.jetstreamManager();
  const stream = subjects(cluster).feedbackStream;
  const si = await jsm.streams.info(stream).catch(() => undefined);
  const consumers: ModelTag['consumers'] = [];
  const busy: string[] = [];
  if (si) {
    for await (const ci of jsm.consumers.list(stream)) {
      if (!ci.config.durable_name) continue;
      consumers.push({
        name: ci.name,
        ackFloor: ci.ack_floor.stream_seq,
        delivered: ci.delivered.stream_seq,
      });
      if (ci.num_ack_pending > 0) busy.push(`${ci.name} has ${ci.num_ack_pending} unacknowledged`);
    }
  }
  return {
    lastSeq: si?.state.last_seq ?? 0,
    consumers: consumers.sort((a, b) => a.name.localeCompare(b.name)),
    ...(busy.length > 0 ? { busy: `events in flight (${busy.join(', ')})` } : {}),
  };
}

/** `freshet model tag NAME`. */
export function modelTagCommand(): Command {
  return common(new Command('tag'))
    .description("Name the model as it is now: every shard's checkpoint, kept until untagged")
    .argument('<name>', 'tag name (letters, digits, - and _)')
    .option('--timeout-ms <ms>', 'per-shard checkpoint and upload timeout', '120000')
    .action(async (name: string, f: Flags) => {
      await withAdmin(f, 'freshet-model-tag', async (nc) => {
        const t = await takeTag(nc, f.cluster, name, Number(f.timeoutMs));
        if (f.json) process.stdout.write(JSON.stringify(t) + '\n');
        else {
          process.stdout.write(
            `tagged ${t.name}: ${t.checkpoints.map((c) => `shard ${c.shard} v${c.version} (${c.object})`).join(', ')}; ` +
              `stream at ${t.stream.lastSeq}; ` +
              (t.replayable ? 'replayable\n' : `not replayable: ${t.why}\n`),
          );
        }
      });
    });
}

/** `freshet model tags`. */
export function modelTagsCommand(): Command {
  return common(new Command('tags'))
    .description('List the model tags and whether their checkpoints are still in the Object Store')
    .action(async (f: Flags) => {
      await withAdmin(f, 'freshet-model-tags', async (nc) => {
        const tags = await listTags(nc, await clusterKv(nc, f.cluster), f.cluster);
        const { ObjectBucket } = await import('@freshet/shard');
        const bucket = await ObjectBucket.open(nc, subjects(f.cluster).objectStore);
        const rows = [];
        for (const t of tags) {
          let missing = 0;
          for (const c of t.checkpoints) {
            const r = await bucket?.info(c.object);
            if (!r || r.deleted) missing++;
          }
          rows.push({ ...t, missing });
        }
        if (f.json) {
          process.stdout.write(JSON.stringify({ tags: rows }) + '\n');
          return;
        }
        process.stdout.write(
          table(
            ['tag', 'created', 'shards', 'versions', 'stream seq', 'replay', 'state'],
            rows.map((t) => [
              t.name,
              `${new Date(t.createdAt).toISOString()} (${fmt.ago(t.createdAt)})`,
              String(t.shards),
              t.checkpoints.map((c) => c.version).join(','),
              String(t.stream.lastSeq),
              t.replayable ? 'yes' : 'no',
              t.missing > 0 ? `${t.missing} checkpoint(s) missing` : 'ok',
            ]),
          ) + '\n',
        );
      });
    });
}

/** `freshet model untag NAME`: the checkpoints lose the tag (keep-N may delete them), the record goes. */
export function modelUntagCommand(): Command {
  return common(new Command('untag'))
    .description('Remove a model tag (its checkpoints fall back under keep-N deletion)')
    .argument('<name>', 'tag name')
    .action(async (name: string, f: Flags) => {
      await withAdmin(f, 'freshet-model-untag', async (nc) => {
        const kv = await clusterKv(nc, f.cluster);
        const t = await readTag(kv, name);
        if (!t)
          throw new FreshetError('BAD_REQUEST', `no tag ${name} in cluster ${f.cluster}`, {
            retryable: false,
          });
        const { ObjectBucket } = await import('@freshet/shard');
        const bucket = await ObjectBucket.open(nc, t.bucket);
        for (const c of t.checkpoints) await bucket?.retag(c.object, [], [name]);
        await kv.delete(modelTagPrefix + name);
        process.stdout.write(f.json ? JSON.stringify({ untagged: name }) + '\n' : `untagged ${name}\n`);
      });
    });
}
