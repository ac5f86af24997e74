import type { JoinedExample } from './joiner.js';

/** Impressions served by one model and the positives (clicks, conversions, ...) they got. */
export interface ServedCounts {
  impressions: number;
  positives: number;
  /** positives / impressions; null before any impression. */
  ctr: number | null;
}

/**
 * Served CTR per model: impressions whose publisher put the serving response's `servedBy` on
 * them (`meta.servedBy`), and how many of those got a positive label. Counted where the data is,
 * at the join: the joiner sees each impression with its label, whichever model trains on it.
 * Bounded: impressions naming more than `maxModels` distinct models go under `other`.
 */
export class ServedCtr {
  private readonly by = new Map<string, { impressions: number; positives: number }>();

  constructor(private readonly maxModels = 32) {}

  record(ex: JoinedExample): void {
    if (ex.servedBy === undefined || ex.impressionId === undefined) return;
    let key = ex.servedBy;
    if (!this.by.has(key) && this.by.size >= this.maxModels) key = 'other';
    let c = this.by.get(key);
    if (!c) this.by.set(key, (c = { impressions: 0, positives: 0 }));
    // a late positive re-inserted after its impression went out as a negative: that impression
    // was counted then; only its positive is new
    if (!ex.delayed) c.impressions++;
    if (ex.label >= 0.5) c.positives++;
  }

  snapshot(): Record<string, ServedCounts> {
    const out: Record<string, ServedCounts> = {};
    for (const [m, c] of this.by)
      out[m] = { ...c, ctr: c.impressions > 0 ? c.positives / c.impressions : null };
    return out;
  }
}
