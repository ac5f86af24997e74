import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Draw } from './random.js';

/**
 * Any CSV plus the spec that maps it (the `csv:` dataset kind): a click log with a header, unix
 * seconds out of order, quoted fields holding commas and doubled quotes, an empty numeric, and a
 * spec.json naming the columns (`impression-click`: impression, plus a click when `clicked` = 1).
 */
export interface CsvFixtureOptions {
  rows?: number;
  seed?: number;
}

export interface CsvFixtureRow {
  /** Unix seconds. */
  when: number;
  uid: string;
  doc: string;
  clicked: 0 | 1;
  /** null: the field is empty. */
  score: number | null;
  title: string;
}

export interface CsvFixture {
  path: string;
  specPath: string;
  spec: Record<string, unknown>;
  rows: CsvFixtureRow[];
}

const WORDS = ['red', 'shoes', 'blue', 'hat', 'wool', 'coat', 'Summer', 'sale', 'linen', 'shirt'];

export function writeCsvFixture(dir: string, o: CsvFixtureOptions = {}): CsvFixture {
  const n = o.rows ?? 200;
  const d = new Draw(o.seed ?? 1);
  const rows: CsvFixtureRow[] = [];
  for (let r = 0; r < n; r++) {
    const words = Array.from({ length: 1 + d.int(3) }, () => WORDS[d.int(WORDS.length)]!);
    rows.push({
      // Out of order on purpose: the reader sorts by timestamp.
      when: 1_700_000_000 + d.int(n * 3),
      uid: `u${d.zipf(40)}`,
      doc: `d${d.zipf(100)}`,
      clicked: d.chance(0.2) ? 1 : 0,
      score: d.chance(0.1) ? null : Math.round(d.next() * 1000) / 100,
      title: d.chance(0.3) ? `${words.join(', ')} "${words[0]!}"` : words.join(' '),
    });
  }
  const quote = (s: string) => (/[",\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s);
  const lines = ['when,uid,doc,clicked,score,title'];
  for (const r of rows) {
    lines.push([r.when, r.uid, r.doc, r.clicked, r.score ?? '', quote(r.title)].join(','));
  }
  const path = join(dir, 'log.csv');
  writeFileSync(path, lines.join('\n') + '\n');
  const spec = {
    kind: 'impression-click',
    label: { column: 'clicked' },
    user: 'uid',
    item: 'doc',
    timestamp: { column: 'when', unit: 's' },
    numeric: ['score'],
    text: ['title'],
  };
  const specPath = join(dir, 'spec.json');
  writeFileSync(specPath, JSON.stringify(spec, null, 2) + '\n');
  return { path, specPath, spec, rows };
}
