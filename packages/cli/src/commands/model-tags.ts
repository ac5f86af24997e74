import type { KV, NatsConnection } from 'nats';
import { z } from 'zod';
import { kvKeys } from '@freshet/nats';
import { FreshetError, subjects } from '@freshet/protocol';

/**
 * Model tags in the cluster KV (docs/model-versions.md): `model-tag.<name>` records which
 * Object Store checkpoint of each shard the tag holds, and where the feedback stream and its
 * consumers stood when it was taken.
 */
export const modelTagPrefix = 'model-tag.';

/** A tag name: it is a KV key token and an entry of the objects' comma-separated `tags` field. */
export const tagNamePattern = /^[A-Za-z0-9_-]{1,64}$/;

export function checkTagName(name: string): string {
  if (!tagNamePattern.test(name)) {
    throw new FreshetError('BAD_REQUEST', `bad tag name "${name}": 1-64 letters, digits, - or _`, {
      retryable: false,
    });
  }
  return name;
}

export const modelTagSchema = z.object({
  name: z.string(),
  /** When it was taken (ms since epoch). */
  createdAt: z.number(),
  model: z.string(),
  shards: z.number().int().min(1),
  bucket: z.string(),
  /** One per shard, by index. */
  checkpoints: z.array(
    z.object({
      shard: z.number().int().min(0),
      object: z.string(),
      segment: z.number().int(),
      version: z.number(),
      deltaSeq: z.number(),
      sha256: z.string(),
    }),
  ),
  /** The feedback stream's last sequence when the tag was taken. */
  stream: z.object({ name: z.string(), lastSeq: z.number() }),
  /** Each durable consumer's ack floor then (what a replay would start after). */
  consumers: z.array(z.object({ name: z.string(), ackFloor: z.number(), delivered: z.number() })),
  /**
   * Whether `rollback --replay` may start the consumers right after these floors: only when the
   * checkpoints hold exactly the events up to them (nothing was in flight, and nothing was
   * acknowledged while the checkpoints were taken). `why` says what was in the way.
   */
  replayable: z.boolean().default(false),
  why: z.string().optional(),
});
export type ModelTag = z.infer<typeof modelTagSchema>;

/** The cluster's KV bucket (created by `freshet init` or the first worker). */
export async function clusterKv(nc: NatsConnection, cluster: string): Promise<KV> {
  const bucket = subjects(cluster).kvBucket;
  try {
    const kv = await nc.jetstream().views.kv(bucket, { bindOnly: true });
    await kv.status();
    return kv;
  } catch (e) {
    throw new FreshetError(
      'UNAVAILABLE',
      `no KV bucket ${bucket} for cluster ${cluster}: run \`freshet init --config FILE\` (${(e as Error).message})`,
      { cause: e },
    );
  }
}

export async function readTag(kv: KV, name: string): Promise<ModelTag | undefined> {
  const e = await kv.get(modelTagPrefix + checkTagName(name));
  if (!e || e.operation !== 'PUT') return undefined;
  return modelTagSchema.parse(JSON.parse(new TextDecoder().decode(e.value)));
}

/**
 * The cluster bucket's keys under `filter` that hold a value now, listed completely (`kvKeys`:
 * `kv.keys()` can stop after the first key when listings run concurrently).
 */
export async function liveKeys(
  nc: NatsConnection,
  kv: KV,
  cluster: string,
  filter: string,
): Promise<string[]> {
  const out: string[] = [];
  for (const k of await kvKeys(await nc.jetstreamManager(), subjects(cluster).kvBucket, filter)) {
    if ((await kv.get(k))?.operation === 'PUT') out.push(k);
  }
  return out;
}

export async function listTags(nc: NatsConnection, kv: KV, cluster: string): Promise<ModelTag[]> {
  const out: ModelTag[] = [];
  for (const k of await liveKeys(nc, kv, cluster, `${modelTagPrefix}>`)) {
    const t = await readTag(kv, k.slice(modelTagPrefix.length));
    if (t) out.push(t);
  }
  return out.sort((a, b) => a.createdAt - b.createdAt);
}

/** Polls `get` every 100 ms until it returns a value; UNAVAILABLE naming `what` after `timeoutMs`. */
export async function pollFor<T>(get: () => Promise<T | null>, timeoutMs: number, what: string): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await get();
    if (v !== null) return v;
    if (Date.now() > end)
      throw new FreshetError('UNAVAILABLE', `timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
