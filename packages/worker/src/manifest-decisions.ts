import type { KV } from 'nats';
import { isConflict } from './kv-errors.js';

/**
 * Which parts of a batch of several partitions are recovered, agreed once for all recoverers.
 *
 * Each partition's owner recovers its own copy of such a batch, at its own time, and may see a
 * different set of the other copies (one not landed yet, one already dropped). Parts pushed
 * under the batch's one id must be the same for everyone: the first push is applied, later ones
 * are duplicates, and every recoverer acks its partition's redeliveries as applied. So the first
 * recoverer stores the parts it saw (create: first writer wins) and every later one pushes
 * exactly those, leaving a partition outside them to be trained from its redeliveries.
 */

/** KV key of batch `id`'s decision. */
export function decisionKey(id: string): string {
  return `mfd.${id}`;
}

/**
 * The agreed parts of batch `id`: `seen` (sorted) when this recoverer decides first, else the
 * earlier decision. `kv` reads from the stream leader. Throws what KV throws (the caller retries).
 */
export async function agreeParts(kv: KV, id: string, seen: readonly number[]): Promise<number[]> {
  const key = decisionKey(id);
  for (;;) {
    try {
      await kv.create(key, new TextEncoder().encode(JSON.stringify({ parts: seen })));
      return [...seen];
    } catch (e) {
      if (!isConflict(e)) throw e;
    }
    const got = await kv.get(key);
    if (got && got.operation === 'PUT' && got.length > 0) {
      const v = JSON.parse(new TextDecoder().decode(got.value)) as { parts?: unknown };
      if (Array.isArray(v.parts) && v.parts.every((x) => Number.isInteger(x))) return v.parts as number[];
      throw new Error(`malformed recovery decision ${key}`);
    }
    // deleted between our create and read (pruned): decide again
  }
}

/**
 * Deletes decisions older than `maxAgeMs`: every partition of their batch has been owned and
 * recovered since (a dead writer's partitions are leased again within a lease TTL).
 */
export async function pruneDecisions(
  kv: KV,
  keys: (filter: string) => Promise<string[]>,
  maxAgeMs: number,
): Promise<number> {
  let n = 0;
  for (const k of await keys('mfd.*')) {
    const e = await kv.get(k);
    if (!e || e.operation !== 'PUT' || Date.now() - e.created.getTime() < maxAgeMs) continue;
    await kv.delete(k, { previousSeq: e.revision }).then(
      () => n++,
      () => undefined,
    );
  }
  return n;
}
