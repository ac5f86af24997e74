import { readFileSync } from 'node:fs';
import { z } from 'zod';
import { FreshetError, tokenizeText, type FeedbackEventInput, type Features } from '@freshet/protocol';
import { readLines, splitCsvLine } from './csv.js';

const column = z.union([z.string().min(1), z.number().int().min(0)]);

/**
 * A spec file that maps any CSV's columns onto events, so a new dataset needs a spec, not code.
 * Columns are named by header name (with `header: true`) or by 0-based index.
 */
export const csvSpecSchema = z.object({
  delimiter: z.string().length(1).default(','),
  header: z.boolean().default(true),
  encoding: z.enum(['utf8', 'latin1']).default('utf8'),
  /** `example`: labelled examples; `impression-click`: impression + click when label ≥ threshold; `rating`. */
  kind: z.enum(['example', 'impression-click', 'rating']).default('example'),
  label: z.object({ column, threshold: z.number().default(0.5) }).optional(),
  /** Rating value column for kind `rating`. */
  rating: column.optional(),
  id: column.optional(),
  user: column.optional(),
  item: column.optional(),
  request: column.optional(),
  position: column.optional(),
  propensity: column.optional(),
  timestamp: z.object({ column, unit: z.enum(['s', 'ms', 'iso']).default('s') }).optional(),
  numeric: z.array(column).default([]),
  categorical: z.array(column).default([]),
  /** Text columns become lower-cased token lists. */
  text: z.array(column).default([]),
  /** Sort by timestamp (stable) before replay; needs the whole file in memory. */
  sort: z.boolean().default(true),
  /** Without a timestamp column rows get `startTs + row · intervalMs`. */
  startTs: z.number().default(Date.UTC(2020, 0, 1)),
  intervalMs: z.number().min(0).default(100),
});
export type CsvSpecInput = z.input<typeof csvSpecSchema>;
export type CsvSpec = z.infer<typeof csvSpecSchema>;

/** Parses a spec object or a JSON spec file path; a bad spec throws CONFIG. */
export function loadCsvSpec(spec: CsvSpecInput | string): CsvSpec {
  let raw: unknown = spec;
  if (typeof spec === 'string') {
    try {
      raw = JSON.parse(readFileSync(spec, 'utf8'));
    } catch (e) {
      throw new FreshetError('CONFIG', `csv spec ${spec}: ${(e as Error).message}`);
    }
  }
  const r = csvSpecSchema.safeParse(raw);
  if (!r.success) {
    const i = r.error.issues[0];
    throw new FreshetError('CONFIG', `csv spec: ${i?.path.join('.')}: ${i?.message}`);
  }
  const s = r.data;
  if (s.kind !== 'rating' && !s.label)
    throw new FreshetError('CONFIG', `csv spec: kind ${s.kind} needs label`);
  if (s.kind === 'rating' && (s.rating === undefined || s.item === undefined)) {
    throw new FreshetError('CONFIG', 'csv spec: kind rating needs rating and item columns');
  }
  if (s.kind === 'impression-click' && s.item === undefined) {
    throw new FreshetError('CONFIG', 'csv spec: kind impression-click needs an item column');
  }
  return s;
}

const tokenize = (s: string) => tokenizeText(s, 256);

/** Reads a CSV through a spec into events in time order. */
export async function* readCsv(
  path: string,
  specInput: CsvSpecInput | string,
  o: { idPrefix?: string; limit?: number } = {},
): AsyncGenerator<FeedbackEventInput> {
  // A click is stamped 1 ms after its impression, so when rows share a timestamp (logs in
  // seconds) it must wait for the impressions of that instant, or replay would go back in time.
  const clicks: FeedbackEventInput[] = [];
  for await (const e of csvEvents(path, specInput, o)) {
    if (e.kind === 'click') {
      clicks.push(e);
      continue;
    }
    while (clicks.length > 0 && clicks[0]!.ts <= e.ts) yield clicks.shift()!;
    yield e;
  }
  yield* clicks;
}

/** The spec's events row by row: sorted by timestamp, each click right after its impression. */
async function* csvEvents(
  path: string,
  specInput: CsvSpecInput | string,
  o: { idPrefix?: string; limit?: number },
): AsyncGenerator<FeedbackEventInput> {
  const spec = loadCsvSpec(specInput);
  const prefix = o.idPrefix ?? 'csv';
  let index: (c: string | number) => number = (c) => (typeof c === 'number' ? c : -1);
  let seenHeader = !spec.header;
  const rows: { ts: number; fields: string[]; row: number }[] = [];
  let row = 0;
  const toTs = (fields: string[], r: number): number => {
    if (!spec.timestamp) return spec.startTs + r * spec.intervalMs;
    const v = fields[index(spec.timestamp.column)] ?? '';
    if (spec.timestamp.unit === 'iso') return Date.parse(v.includes('T') ? v : v.replace(' ', 'T'));
    return Number(v) * (spec.timestamp.unit === 's' ? 1000 : 1);
  };
  const events = function* (fields: string[], r: number, ts: number): Generator<FeedbackEventInput> {
    const get = (c: string | number | undefined) => (c === undefined ? undefined : fields[index(c)]);
    const features: Features = {};
    const name = (c: string | number) => (typeof c === 'number' ? `c${c}` : c);
    for (const c of spec.numeric) {
      const v = get(c);
      if (v !== undefined && v !== '' && Number.isFinite(Number(v))) features[name(c)] = Number(v);
    }
    for (const c of spec.categorical) {
      const v = get(c);
      if (v !== undefined && v !== '') features[name(c)] = v;
    }
    for (const c of spec.text) {
      const v = get(c);
      if (v) features[name(c)] = tokenize(v);
    }
    const id = get(spec.id) || `${prefix}-${r}`;
    const user = get(spec.user) || `${prefix}-u${r}`;
    const item = get(spec.item) || undefined;
    const label = spec.label ? (Number(get(spec.label.column)) >= spec.label.threshold ? 1 : 0) : 0;
    if (spec.kind === 'example') {
      const e: FeedbackEventInput = { kind: 'example', id, ts, user, label, features };
      if (item) e.item = item;
      yield e;
    } else if (spec.kind === 'rating') {
      yield { kind: 'rating', id, ts, user, item: item ?? '', rating: Number(get(spec.rating)), features };
    } else {
      const request = get(spec.request) || `${prefix}-r${r}`;
      const imp: FeedbackEventInput = {
        kind: 'impression',
        id: `${id}-imp`,
        ts,
        user,
        request,
        item: item ?? '',
        features,
      };
      const pos = get(spec.position);
      if (pos) imp.position = Number(pos);
      const prop = get(spec.propensity);
      if (prop) imp.propensity = Number(prop);
      yield imp;
      if (label === 1) yield { kind: 'click', id: `${id}-clk`, ts: ts + 1, user, request, item: item ?? '' };
    }
  };
  for await (const line of readLines(path, spec.encoding)) {
    const fields = splitCsvLine(line, spec.delimiter);
    if (!seenHeader) {
      seenHeader = true;
      const names = new Map(fields.map((h, i) => [h.trim(), i]));
      index = (c) => {
        if (typeof c === 'number') return c;
        const i = names.get(c);
        if (i === undefined) throw new FreshetError('CONFIG', `csv spec: no column "${c}" in ${path}`);
        return i;
      };
      continue;
    }
    if (line.length === 0) continue;
    if (o.limit !== undefined && row >= o.limit) break;
    const ts = toTs(fields, row);
    if (spec.sort && spec.timestamp) rows.push({ ts, fields, row });
    else yield* events(fields, row, ts);
    row++;
  }
  rows.sort((a, b) => a.ts - b.ts || a.row - b.row);
  for (const r of rows) yield* events(r.fields, r.row, r.ts);
}
