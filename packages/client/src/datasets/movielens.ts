import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { FeedbackEventInput } from '@freshet/protocol';
import { FreshetError } from '@freshet/protocol';
import { readLines, splitCsvLine } from './csv.js';

export interface MovieLensOptions {
  idPrefix?: string;
  limit?: number;
}

interface Rating {
  user: number;
  item: number;
  rating: number;
  ts: number;
}

/** The ratings file of a MovieLens directory (latest-small `ratings.csv` or 100k `u.data`). */
export function movieLensRatingsFile(path: string): string {
  if (!statSync(path).isDirectory()) return path;
  for (const f of ['ratings.csv', 'u.data']) if (existsSync(join(path, f))) return join(path, f);
  throw new FreshetError('CONFIG', `no ratings.csv or u.data in ${path}`);
}

/**
 * Reads MovieLens ratings (`u.data` TSV or `ratings.csv`) as rating events, sorted by
 * (timestamp, user, item): the files are not in time order and many ratings share a second, so
 * this is the one deterministic replay order. Loads the file (100k ratings: a few MB).
 */
export async function* readMovieLens(
  path: string,
  o: MovieLensOptions = {},
): AsyncGenerator<FeedbackEventInput> {
  const file = movieLensRatingsFile(path);
  const prefix = o.idPrefix ?? 'ml';
  const rows: Rating[] = [];
  let first = true;
  for await (const line of readLines(file)) {
    if (first) {
      first = false;
      if (line.startsWith('userId')) continue;
    }
    if (line.length === 0) continue;
    const f = line.includes('\t') ? line.split('\t') : splitCsvLine(line, ',');
    const r = { user: Number(f[0]), item: Number(f[1]), rating: Number(f[2]), ts: Number(f[3]) * 1000 };
    if (
      Number.isFinite(r.user) &&
      Number.isFinite(r.item) &&
      Number.isFinite(r.rating) &&
      Number.isFinite(r.ts)
    ) {
      rows.push(r);
    }
  }
  rows.sort((a, b) => a.ts - b.ts || a.user - b.user || a.item - b.item);
  const n = o.limit === undefined ? rows.length : Math.min(o.limit, rows.length);
  for (let i = 0; i < n; i++) {
    const r = rows[i]!;
    yield {
      kind: 'rating',
      id: `${prefix}-${r.user}-${r.item}`,
      ts: r.ts,
      user: String(r.user),
      item: String(r.item),
      rating: r.rating,
    };
  }
}
