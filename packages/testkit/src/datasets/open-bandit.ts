import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Draw, hexToken, sigmoid } from './random.js';

/**
 * An Open Bandit Dataset log (ZOZOTOWN, Saito et al. 2020) laid out as the dataset is:
 * `<root>/<policy>/<campaign>/<campaign>.csv` with its `item_context.csv`. The log has an unnamed
 * index column, `timestamp` (`2019-11-24 00:03:13.442536+00:00`), `item_id`, 1-based `position`
 * (1–3), `click`, `propensity_score`, four hashed `user_feature_k` and one
 * `user-item_affinity_<item>` column per item; it is in time order. Clicks are rare (≈0.5%).
 */
export interface OpenBanditFixtureOptions {
  rows?: number;
  items?: number;
  policy?: 'random' | 'bts';
  campaign?: 'men' | 'women' | 'all';
  seed?: number;
}

export interface OpenBanditFixtureRow {
  /** ms since the epoch. */
  ts: number;
  item: number;
  /** 1-based, as in the file. */
  position: number;
  click: 0 | 1;
  propensity: number;
  userFeatures: string[];
  affinity: number;
}

export interface OpenBanditFixture {
  /** The dataset root (`<root>/<policy>/<campaign>/...`). */
  root: string;
  /** The log file. */
  file: string;
  rows: OpenBanditFixtureRow[];
  /** item_feature_0 (a number) and item_feature_1..3 (hashes) per item. */
  itemFeatures: Array<[number, string, string, string]>;
  clicks: number;
}

export function writeOpenBanditFixture(root: string, o: OpenBanditFixtureOptions = {}): OpenBanditFixture {
  const n = o.rows ?? 2000;
  const items = o.items ?? 34;
  const policy = o.policy ?? 'random';
  const campaign = o.campaign ?? 'men';
  const d = new Draw(o.seed ?? 1);
  const dir = join(root, policy, campaign);
  mkdirSync(dir, { recursive: true });

  const itemFeatures = Array.from(
    { length: items },
    (_, i) =>
      [d.normal(), hexToken(40, i % 7, 32), hexToken(41, i % 3, 32), hexToken(42, i % 2, 32)] as [
        number,
        string,
        string,
        string,
      ],
  );
  writeFileSync(
    join(dir, 'item_context.csv'),
    ',item_id,item_feature_0,item_feature_1,item_feature_2,item_feature_3\n' +
      itemFeatures.map((f, i) => `${i},${i},${f.join(',')}`).join('\n') +
      '\n',
  );

  const header = [
    '',
    'timestamp',
    'item_id',
    'position',
    'click',
    'propensity_score',
    'user_feature_0',
    'user_feature_1',
    'user_feature_2',
    'user_feature_3',
    ...Array.from({ length: items }, (_, i) => `user-item_affinity_${i}`),
  ];
  const lines = [header.join(',')];
  const rows: OpenBanditFixtureRow[] = [];
  let ts = Date.UTC(2019, 10, 24, 0, 3, 13);
  let clicks = 0;
  for (let r = 0; r < n; r++) {
    ts += 1 + d.int(20_000);
    const item = d.int(items);
    const position = 1 + d.int(3);
    // A uniform random policy shows each item with the same propensity; bts leans to a few.
    const propensity = policy === 'random' ? 1 / items : Math.min(1, (2 / items) * (1 + (item % 3)));
    const userFeatures = [0, 1, 2, 3].map((k) => hexToken(50 + k, d.zipf(k === 2 ? 20 : 6), 32));
    const affinity = d.chance(0.05) ? 1 + d.int(3) : 0;
    const click = d.chance(sigmoid(-5.6 + affinity + itemFeatures[item]![0] * 0.5 - (position - 1) * 0.4))
      ? 1
      : 0;
    clicks += click;
    rows.push({ ts, item, position, click, propensity, userFeatures, affinity });
    const iso = new Date(ts).toISOString().replace('T', ' ').replace('Z', '000+00:00');
    const aff = Array.from({ length: items }, (_, i) => (i === item ? affinity.toFixed(1) : '0.0'));
    lines.push([r, iso, item, position, click, propensity, ...userFeatures, ...aff].join(','));
  }
  const file = join(dir, `${campaign}.csv`);
  writeFileSync(file, lines.join('\n') + '\n');
  return { root, file, rows, itemFeatures, clicks };
}
