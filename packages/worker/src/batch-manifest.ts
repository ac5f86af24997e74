import { z } from 'zod';
import { decodeJsonRecord, featuresSchema, type Features } from '@freshet/protocol';

/**
 * Batch manifests: what a worker writes to the cluster's KV bucket before it pushes a batch, so
 * that a crash between some shard accepting the push and the events' acks cannot make the
 * partition's next owner apply those examples again under another push id. The manifest names
 * the batch's examples by the stream sequences of their messages (not their tensors); the next
 * owner re-forms exactly that batch and pushes it with the same id, so shards that already
 * applied it answer `duplicate` and the others apply it once.
 *
 * Joined examples carry their features, label and weight: the joiner's state (an impression
 * remembered for a late click, labels that depend on timing) cannot be re-derived from the
 * redelivered messages. Pre-labelled `example` events carry only their sequence: the event on
 * the stream is the example.
 */

/** One example of a manifest. */
export interface ManifestExample {
  /** Stream sequences of the messages this example holds (1 or 2). */
  s: number[];
  /** Its partition, in a batch of several (a copy may be missing: see ManifestRecovery). */
  p?: number;
  /** Joined examples only: label, weight, event time and features. */
  l?: number;
  w?: number;
  t?: number;
  f?: Features;
}

/** A batch as written to KV before its first push. */
export interface BatchManifest {
  v: 1;
  /** The batch's push id prefix (per-shard ids append `.s<shard>`). */
  id: string;
  partition: number;
  /** Every partition of the batch, when it has several (the manifest is stored under each). */
  partitions?: number[];
  worker: string;
  /**
   * The writer's incarnation tag: recovery ignores a copy stored after this incarnation lost
   * the partition (manifest-epochs.ts). Absent from older workers' manifests.
   */
  e?: string;
  /** Oldest event time of the batch (freshness stamp of the push), ms. */
  eventTs?: number;
  ex: ManifestExample[];
}

const manifestSchema = z.object({
  v: z.literal(1),
  id: z.string().regex(/^[A-Za-z0-9_-]{1,64}$/),
  partition: z.number().int().min(0),
  partitions: z.array(z.number().int().min(0)).max(4096).optional(),
  worker: z.string().max(128),
  e: z.string().max(160).optional(),
  eventTs: z.number().finite().optional(),
  ex: z
    .array(
      z.object({
        s: z.array(z.number().int().min(1)).max(2),
        p: z.number().int().min(0).optional(),
        l: z.number().finite().optional(),
        w: z.number().finite().optional(),
        t: z.number().finite().optional(),
        f: featuresSchema.optional(),
      }),
    )
    .min(1),
});

/** KV key filter of every manifest of one partition. */
export function manifestFilter(partition: number): string {
  return `mf.${partition}.*`;
}

/**
 * KV key of a manifest: one slot of one partition. A worker has at most `maxInFlightBatches`
 * batches of a partition between push and ack, so the keys (and the delete markers they leave)
 * stay bounded at partitions × slots instead of growing with every batch.
 */
export function manifestKey(partition: number, slot: number): string {
  return `mf.${partition}.${slot}`;
}

const enc = new TextEncoder();

/** JSON bytes (small: a sequence per pre-labelled example). */
export function encodeManifest(m: BatchManifest): Uint8Array {
  return enc.encode(JSON.stringify(m));
}

/** Validates a manifest read back from KV; throws `BAD_REQUEST` on anything else. */
export function decodeManifest(data: Uint8Array): BatchManifest {
  return decodeJsonRecord(manifestSchema, data, 'batch manifest') as BatchManifest;
}
