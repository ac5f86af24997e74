import type { NatsConnection } from 'nats';
import { FreshetError, parseModelSpec, subjects, type ModelSpec } from '@freshet/protocol';

/**
 * The model spec shards serve, kept in the cluster's KV bucket under one key. `freshet init`
 * writes it; shards started without a `model` option read it. Both sides use this module, so the
 * key and the encoding cannot drift apart.
 */
export const modelSpecKey = 'model-spec';

/** What the bucket holds: nothing yet (no bucket or no key), or a valid spec. */
export type StoredModelSpec = { state: 'missing'; reason: string } | { state: 'present'; spec: ModelSpec };

const isNotFound = (e: unknown) => /not found/i.test((e as Error)?.message ?? '');

/**
 * Reads the stored spec. A missing bucket or key is `missing` (init has not run); a stored value
 * that does not parse is a CONFIG error, since waiting would not fix it.
 */
export async function readModelSpec(nc: NatsConnection, cluster: string): Promise<StoredModelSpec> {
  const bucket = subjects(cluster).kvBucket;
  const kv = await nc.jetstream().views.kv(bucket, { bindOnly: true });
  try {
    // binding does not look: the status does, and tells a missing bucket from a missing key
    await kv.status();
  } catch (e) {
    if (isNotFound(e)) return { state: 'missing', reason: `no KV bucket ${bucket}` };
    throw e;
  }
  const e = await kv.get(modelSpecKey);
  if (!e || e.operation !== 'PUT' || e.value.length === 0) {
    return { state: 'missing', reason: `no ${modelSpecKey} in KV bucket ${bucket}` };
  }
  try {
    return { state: 'present', spec: parseModelSpec(JSON.parse(e.string())) };
  } catch (err) {
    throw new FreshetError('CONFIG', `${modelSpecKey} in ${bucket} is invalid: ${(err as Error).message}`);
  }
}

/** Stores `spec` (validated first) in an existing bucket. */
export async function writeModelSpec(nc: NatsConnection, cluster: string, spec: ModelSpec): Promise<void> {
  const kv = await nc.jetstream().views.kv(subjects(cluster).kvBucket, { bindOnly: true });
  await kv.put(modelSpecKey, JSON.stringify(parseModelSpec(spec)));
}

/**
 * Why a running cluster cannot move from `stored` to `wanted`: shards keep rows per table id and
 * width, and the optimizer state next to them, so a table renamed, re-kinded, resized or given
 * another optimizer kind would misread every checkpoint and every worker's pushes. Other fields
 * (learning rates, staleness, admission, expiry) may change. Empty when compatible.
 */
export function modelSpecConflicts(stored: ModelSpec, wanted: ModelSpec): string[] {
  const out: string[] = [];
  if (stored.tables.length !== wanted.tables.length) {
    out.push(`table count ${stored.tables.length} -> ${wanted.tables.length}`);
  }
  const n = Math.min(stored.tables.length, wanted.tables.length);
  for (let i = 0; i < n; i++) {
    const a = stored.tables[i]!;
    const b = wanted.tables[i]!;
    const at = `table ${i} (${a.name})`;
    if (a.name !== b.name) out.push(`${at}: name ${a.name} -> ${b.name}`);
    if (a.kind !== b.kind) out.push(`${at}: kind ${a.kind} -> ${b.kind}`);
    if (a.dim !== b.dim) out.push(`${at}: dim ${a.dim} -> ${b.dim}`);
    // which floats of which tensor a part holds (densePartFloats): the workers join by it
    const part = (t: typeof a) =>
      t.part ? `${t.part.of}[${t.part.offset}..] (${t.part.index}/${t.part.count})` : 'whole';
    if (part(a) !== part(b)) out.push(`${at}: part ${part(a)} -> ${part(b)}`);
    if (a.optimizer.kind !== b.optimizer.kind) {
      out.push(`${at}: optimizer ${a.optimizer.kind} -> ${b.optimizer.kind}`);
    }
  }
  return out;
}

/** Whether two specs are the same once defaults are applied (key order follows the schema). */
export function sameModelSpec(a: ModelSpec, b: ModelSpec): boolean {
  return JSON.stringify(parseModelSpec(a)) === JSON.stringify(parseModelSpec(b));
}
