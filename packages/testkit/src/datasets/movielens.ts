import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Draw } from './random.js';

/**
 * MovieLens ratings in either GroupLens layout: `100k` writes `u.data` (user, item, rating 1–5,
 * unix seconds; tab-separated, no header, in no particular order), `latest-small` writes
 * `ratings.csv` (`userId,movieId,rating,timestamp`, half-star ratings 0.5–5, sorted by user).
 * Each user rates an item at most once, and many ratings share a second, as in the real files.
 */
export interface MovieLensFixtureOptions {
  format?: '100k' | 'latest-small';
  ratings?: number;
  users?: number;
  items?: number;
  seed?: number;
}

export interface MovieLensFixtureRating {
  user: number;
  item: number;
  rating: number;
  /** Unix seconds. */
  ts: number;
}

export interface MovieLensFixture {
  /** The directory (the reader finds u.data or ratings.csv in it). */
  dir: string;
  /** The ratings file itself. */
  file: string;
  ratings: MovieLensFixtureRating[];
}

export function writeMovieLensFixture(dir: string, o: MovieLensFixtureOptions = {}): MovieLensFixture {
  const format = o.format ?? '100k';
  const users = o.users ?? 60;
  const items = o.items ?? 200;
  const n = Math.min(o.ratings ?? 3000, users * items);
  const d = new Draw(o.seed ?? 1);
  const seen = new Set<number>();
  const ratings: MovieLensFixtureRating[] = [];
  // Each user has a session start; their ratings come in bursts of a few per second.
  const start = format === '100k' ? 874_724_710 : 964_982_703;
  const session = Array.from({ length: users }, () => start + d.int(200 * 86_400));
  const taste = Array.from({ length: users }, () => d.normal());
  while (ratings.length < n) {
    const user = 1 + d.zipf(users);
    const item = 1 + d.zipf(items);
    const key = user * (items + 1) + item;
    if (seen.has(key)) continue;
    seen.add(key);
    const ts = session[user - 1]! + Math.floor(ratings.length / 7) + d.int(3);
    const mean = 3.5 + 0.6 * taste[user - 1]! + (item % 5) * 0.1 - 0.2;
    const raw = mean + d.normal() * 0.9;
    const rating =
      format === '100k'
        ? Math.min(5, Math.max(1, Math.round(raw)))
        : Math.min(5, Math.max(0.5, Math.round(raw * 2) / 2));
    ratings.push({ user, item, rating, ts });
  }
  mkdirSync(dir, { recursive: true });
  let file: string;
  if (format === '100k') {
    file = join(dir, 'u.data');
    writeFileSync(file, ratings.map((r) => `${r.user}\t${r.item}\t${r.rating}\t${r.ts}`).join('\n') + '\n');
  } else {
    file = join(dir, 'ratings.csv');
    const sorted = [...ratings].sort((a, b) => a.user - b.user || a.item - b.item);
    const fmt = (x: number) => (Number.isInteger(x) ? x.toFixed(1) : String(x));
    writeFileSync(
      file,
      'userId,movieId,rating,timestamp\n' +
        sorted.map((r) => `${r.user},${r.item},${fmt(r.rating)},${r.ts}`).join('\n') +
        '\n',
    );
  }
  return { dir, file, ratings };
}
