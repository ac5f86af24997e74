import { FreshetError, type FeedbackEventInput } from '@freshet/protocol';
import { readCriteo } from './criteo.js';
import { readCsv, type CsvSpecInput } from './csv-spec.js';
import { readMovieLens } from './movielens.js';
import { readOpenBandit } from './open-bandit.js';
import { syntheticEvents, type SyntheticOptions } from './synthetic.js';

/** Dataset kinds understood by {@link openDataset}. */
export const datasetKinds = ['criteo', 'movielens', 'obd', 'csv', 'synthetic'] as const;
export type DatasetKind = (typeof datasetKinds)[number];

export interface OpenDatasetOptions {
  /** Spec for `csv:` (object or JSON file path). */
  spec?: CsvSpecInput | string;
  limit?: number;
  idPrefix?: string;
  /** Criteo as pre-labelled examples (default) or impression + click pairs. */
  criteoMode?: 'example' | 'impression-click';
}

/** Splits `kind:PATH` (`synthetic` needs no path; `synthetic:seed=2,requests=500` sets options). */
export function parseDatasetRef(data: string): { kind: DatasetKind; path: string } {
  const i = data.indexOf(':');
  const kind = (i < 0 ? data : data.slice(0, i)) as DatasetKind;
  if (!datasetKinds.includes(kind)) {
    throw new FreshetError(
      'CONFIG',
      `unknown dataset "${data}": use ${datasetKinds.map((k) => `${k}:PATH`).join(' | ')}`,
    );
  }
  const path = i < 0 ? '' : data.slice(i + 1);
  if (kind !== 'synthetic' && path === '') throw new FreshetError('CONFIG', `${kind}: needs a path`);
  return { kind, path };
}

function syntheticOptions(s: string, limit?: number): SyntheticOptions {
  const o: Record<string, number> = {};
  for (const kv of s.split(',').filter(Boolean)) {
    const [k, v] = kv.split('=');
    const x = Number(v);
    if (!k || !Number.isFinite(x)) throw new FreshetError('CONFIG', `synthetic: bad option "${kv}"`);
    o[k] = x;
  }
  if (limit !== undefined) o.requests = Math.min(o.requests ?? limit, limit);
  return o as SyntheticOptions;
}

/** Events of a dataset, in time order, with their original timestamps. */
export function openDataset(
  data: string,
  o: OpenDatasetOptions = {},
): AsyncIterable<FeedbackEventInput> | Iterable<FeedbackEventInput> {
  const { kind, path } = parseDatasetRef(data);
  const common: { limit?: number; idPrefix?: string } = {};
  if (o.limit !== undefined) common.limit = o.limit;
  if (o.idPrefix !== undefined) common.idPrefix = o.idPrefix;
  switch (kind) {
    case 'criteo':
      return readCriteo(path, { ...common, mode: o.criteoMode ?? 'example' });
    case 'movielens':
      return readMovieLens(path, common);
    case 'obd':
      return readOpenBandit(path, common);
    case 'csv':
      if (o.spec === undefined) throw new FreshetError('CONFIG', 'csv: needs a spec (--spec SPEC.json)');
      return readCsv(path, o.spec, common);
    case 'synthetic':
      return syntheticEvents({
        ...syntheticOptions(path, o.limit),
        ...(o.idPrefix ? { idPrefix: o.idPrefix } : {}),
      });
  }
}
