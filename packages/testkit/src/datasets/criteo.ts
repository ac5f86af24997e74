import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Draw, hexToken, sigmoid } from './random.js';

/**
 * Criteo display-ads logs (Kaggle `train.txt`): `label, I1..I13, C1..C26`, tab-separated, no
 * header, a missing value an empty field (so lines can end with tabs); integers may be negative,
 * categoricals are 32-bit hashes written as 8 lowercase hex characters. `csv` writes DeepCTR's
 * variant: the same columns, comma-separated, under a header.
 */
export interface CriteoFixtureOptions {
  rows?: number;
  seed?: number;
  format?: 'tsv' | 'csv';
  /** File name inside the directory (default `train.txt`). */
  name?: string;
}

/** One generated row, as the file holds it: null integers and '' categoricals are missing. */
export interface CriteoFixtureRow {
  label: 0 | 1;
  ints: Array<number | null>;
  cats: string[];
}

export interface CriteoFixture {
  path: string;
  rows: CriteoFixtureRow[];
  positives: number;
}

// Missing rates and cardinalities of the public sample's columns, roughly (so readers and models
// meet the same shapes: a mostly-missing C22, 3-valued C9/C20, thousands of C3 values).
const INT_MISSING = [0.45, 0, 0.2, 0.2, 0.03, 0.22, 0.04, 0, 0.04, 0.45, 0.04, 0.77, 0.2];
const CAT_MISSING = [
  0, 0, 0.03, 0.03, 0, 0.12, 0, 0, 0, 0, 0, 0.03, 0, 0, 0, 0.03, 0, 0, 0.45, 0.45, 0.03, 0.82, 0, 0.03, 0.45,
  0.45,
];
const CAT_CARD = [
  400, 500, 5000, 3000, 100, 12, 4000, 200, 3, 3000, 2500, 4500, 2000, 25, 2500, 4000, 10, 1500, 600, 3, 4000,
  10, 14, 2500, 40, 1800,
];

/** Writes a seeded Criteo file whose labels depend on its features (a model can learn it). */
export function writeCriteoFixture(dir: string, o: CriteoFixtureOptions = {}): CriteoFixture {
  const n = o.rows ?? 2000;
  const d = new Draw(o.seed ?? 1);
  const w = new Draw((o.seed ?? 1) + 1000);
  // Hidden click weights per categorical value, drawn once per (field, value) on first use.
  const weights = new Map<number, number>();
  const weight = (f: number, v: number) => {
    const k = f * 100_000 + v;
    let x = weights.get(k);
    if (x === undefined) weights.set(k, (x = f < 8 ? w.normal() * 0.9 : w.normal() * 0.25));
    return x;
  };
  const rows: CriteoFixtureRow[] = [];
  const lines: string[] = [];
  const sep = o.format === 'csv' ? ',' : '\t';
  if (o.format === 'csv') {
    const names = [
      'label',
      ...INT_MISSING.map((_, i) => `I${i + 1}`),
      ...CAT_CARD.map((_, i) => `C${i + 1}`),
    ];
    lines.push(names.join(','));
  }
  let positives = 0;
  for (let r = 0; r < n; r++) {
    let logit = -1.55;
    const ints = INT_MISSING.map((p, i) => {
      if (d.chance(p)) return null;
      // Heavy-tailed counts; I2 goes slightly negative as in the real log.
      const x = Math.floor(Math.exp(Math.abs(d.normal()) * (1 + (i % 4))) - 1) - (i === 1 ? d.int(3) : 0);
      if (i === 0 || i === 6) logit += 0.15 * Math.log1p(Math.max(0, x));
      return x;
    });
    const cats = CAT_CARD.map((card, i) => {
      if (d.chance(CAT_MISSING[i]!)) return '';
      const v = d.zipf(card);
      logit += weight(i, v);
      return hexToken(i, v);
    });
    const label = d.chance(sigmoid(logit)) ? 1 : 0;
    positives += label;
    rows.push({ label, ints, cats });
    lines.push([String(label), ...ints.map((x) => (x === null ? '' : String(x))), ...cats].join(sep));
  }
  const path = join(dir, o.name ?? 'train.txt');
  writeFileSync(path, lines.join('\n') + '\n');
  return { path, rows, positives };
}
