import { existsSync, statSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import type { FeedbackEventInput, Features } from '@freshet/protocol';
import { FreshetError } from '@freshet/protocol';
import { readLines, splitCsvLine } from './csv.js';

export interface OpenBanditOptions {
  idPrefix?: string;
  limit?: number;
}

/** The log file of an Open Bandit path: a `<campaign>.csv`, a campaign dir, or the dataset root. */
export function openBanditLogFile(path: string): string {
  if (!statSync(path).isDirectory()) return path;
  for (const rel of ['', 'random/men', 'random/women', 'bts/men', 'bts/women']) {
    const dir = join(path, rel);
    for (const f of ['men.csv', 'women.csv', 'all.csv']) if (existsSync(join(dir, f))) return join(dir, f);
  }
  throw new FreshetError('CONFIG', `no Open Bandit log under ${path}`);
}

async function itemContext(dir: string): Promise<Map<string, Features>> {
  const items = new Map<string, Features>();
  const file = join(dir, 'item_context.csv');
  if (!existsSync(file)) return items;
  let header: string[] | undefined;
  for await (const line of readLines(file)) {
    const f = splitCsvLine(line);
    if (!header) {
      header = f;
      continue;
    }
    const feats: Features = {};
    let id = '';
    header.forEach((h, i) => {
      const v = f[i] ?? '';
      if (h === 'item_id') id = v;
      else if (h.startsWith('item_feature_') && v !== '') {
        const x = Number(v);
        feats[h] = h === 'item_feature_0' && Number.isFinite(x) ? x : v;
      }
    });
    items.set(id, feats);
  }
  return items;
}

/**
 * Reads an Open Bandit Dataset log (ZOZOTOWN; Saito et al. 2020) as impressions with their
 * 0-based position and the logging policy's propensity, plus a click when `click = 1`. User
 * features and the item's context become features; the user–item affinity of the shown item
 * becomes `affinity`. The log is already in time order.
 */
export async function* readOpenBandit(
  path: string,
  o: OpenBanditOptions = {},
): AsyncGenerator<FeedbackEventInput> {
  const file = openBanditLogFile(path);
  const dir = dirname(file);
  const campaign = basename(file, '.csv');
  const policy = basename(dirname(dir));
  const prefix = o.idPrefix ?? `obd-${policy}-${campaign}`;
  const items = await itemContext(dir);
  let header: string[] | undefined;
  let col: Record<string, number> = {};
  let row = 0;
  for await (const line of readLines(file)) {
    const f = splitCsvLine(line);
    if (!header) {
      header = f;
      col = Object.fromEntries(header.map((h, i) => [h, i]));
      continue;
    }
    if (line.length === 0) continue;
    if (o.limit !== undefined && row >= o.limit) break;
    const get = (name: string) => f[col[name] ?? -1] ?? '';
    const ts = Date.parse(get('timestamp').replace(' ', 'T'));
    const item = get('item_id');
    const uf = [0, 1, 2, 3].map((i) => get(`user_feature_${i}`));
    const features: Features = { ...(items.get(item) ?? {}) };
    uf.forEach((v, i) => {
      if (v !== '') features[`user_feature_${i}`] = v;
    });
    const aff = Number(get(`user-item_affinity_${item}`));
    if (Number.isFinite(aff)) features.affinity = aff;
    // No user id in the log: the user-feature tuple is the closest stable user key.
    const user = uf.map((v) => v.slice(0, 12)).join(':') || 'anonymous';
    const request = `${prefix}-${row}`;
    const propensity = Number(get('propensity_score'));
    const imp: FeedbackEventInput = {
      kind: 'impression',
      id: `${request}-imp`,
      ts,
      user,
      request,
      item,
      position: Math.max(0, Number(get('position')) - 1),
      features,
      meta: { policy, campaign },
    };
    if (Number.isFinite(propensity)) imp.propensity = propensity;
    yield imp;
    if (get('click') === '1') yield { kind: 'click', id: `${request}-clk`, ts: ts + 1, user, request, item };
    row++;
  }
}
