import { z } from 'zod';
import { decodeJsonRecord } from './json-record.js';

/**
 * Running statistics of standardised numeric columns, as each worker publishes them in the
 * cluster's KV bucket (`encoder-stats.<worker>`). Serving merges every worker's record and
 * standardises requests with the result, so a feature is scaled as training scaled it.
 */
export interface EncoderStatsRecord {
  v: 1;
  worker: string;
  /** When the worker wrote it (ms): stale records of long-gone workers can be left out. */
  at: number;
  stats: Record<string, { n: number; mean: number; m2: number }>;
}

export const encoderStatsKeyPrefix = 'encoder-stats';

/** The KV key of one worker's record. */
export function encoderStatsKey(worker: string): string {
  return `${encoderStatsKeyPrefix}.${worker}`;
}

const recordSchema = z.object({
  v: z.literal(1),
  worker: z.string().max(128),
  at: z.number().finite(),
  stats: z.record(
    z.string(),
    z.object({ n: z.number().int().min(0), mean: z.number().finite(), m2: z.number().finite().min(0) }),
  ),
});

const enc = new TextEncoder();

export function encodeEncoderStats(r: EncoderStatsRecord): Uint8Array {
  return enc.encode(JSON.stringify(r));
}

/** Validates a record read back from KV; throws `BAD_REQUEST` on anything else. */
export function decodeEncoderStats(data: Uint8Array): EncoderStatsRecord {
  return decodeJsonRecord(recordSchema, data, 'encoder stats') as EncoderStatsRecord;
}
