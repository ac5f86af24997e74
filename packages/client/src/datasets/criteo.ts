import type { FeedbackEventInput, Features } from '@freshet/protocol';
import { readLines, splitCsvLine } from './csv.js';

/** Options of the Criteo reader. */
export interface CriteoOptions {
  /** `example`: pre-labelled examples. `impression-click`: an impression, plus a click when label = 1. */
  mode?: 'example' | 'impression-click';
  /** Criteo has no timestamps; rows are in time order and get `startTs + row · intervalMs`. */
  startTs?: number;
  intervalMs?: number;
  /** Prefix of event ids (different runs of one file can coexist in the dedupe window). */
  idPrefix?: string;
  limit?: number;
  /**
   * `value` (default): an empty categorical is sent as the empty string, a value of its own, as
   * the PyTorch peer (it hashes `C_k:`) and @freshet/model's `parseCriteoLine` do — "missing" is
   * informative in Criteo. `missing`: left out of the event.
   */
  emptyCategorical?: 'value' | 'missing';
}

const NUMERIC = 13;
const CATEGORICAL = 26;

/**
 * Reads Criteo display-ads logs: the raw Kaggle TSV (`label, I1..I13, C1..C26`, no header, empty =
 * missing) or DeepCTR's CSV with a header. Integer features become numeric features `I1..I13`,
 * hashed categoricals string features `C1..C26`; missing values are left out.
 */
export async function* readCriteo(path: string, o: CriteoOptions = {}): AsyncGenerator<FeedbackEventInput> {
  const mode = o.mode ?? 'example';
  const start = o.startTs ?? Date.UTC(2014, 0, 1);
  const interval = o.intervalMs ?? 100;
  const prefix = o.idPrefix ?? 'criteo';
  const keepEmpty = (o.emptyCategorical ?? 'value') === 'value';
  let row = 0;
  let first = true;
  let delim = '\t';
  for await (const line of readLines(path)) {
    if (first) {
      first = false;
      if (line.startsWith('label')) {
        delim = line.includes('\t') ? '\t' : ',';
        continue;
      }
    }
    if (line.length === 0) continue;
    if (o.limit !== undefined && row >= o.limit) break;
    const f = splitCsvLine(line, delim);
    const label = Number(f[0]) >= 0.5 ? 1 : 0;
    const features: Features = {};
    for (let i = 1; i <= NUMERIC; i++) {
      const v = f[i];
      if (v !== undefined && v !== '') {
        const x = Number(v);
        if (Number.isFinite(x)) features[`I${i}`] = x;
      }
    }
    for (let i = 0; i < CATEGORICAL; i++) {
      const v = f[1 + NUMERIC + i];
      if (v !== undefined && (v !== '' || keepEmpty)) features[`C${i + 1}`] = v;
    }
    const ts = start + row * interval;
    const id = `${prefix}-${row}`;
    // No user id in Criteo: one pseudo-user per row spreads rows evenly over partitions.
    const user = `${prefix}-u${row}`;
    if (mode === 'example') {
      yield { kind: 'example', id, ts, user, label, features };
    } else {
      yield { kind: 'impression', id: `${id}-imp`, ts, user, request: id, item: 'ad', features };
      if (label === 1) {
        yield {
          kind: 'click',
          id: `${id}-clk`,
          ts: ts + Math.max(1, Math.floor(interval / 2)),
          user,
          request: id,
          item: 'ad',
        };
      }
    }
    row++;
  }
}
