import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { openDataset, parseDatasetRef, type CsvSpecInput } from '@freshet/client';
import {
  criteoFeatureSpec,
  featureSpecSchema,
  parseCriteoLine,
  type Example,
  type FieldSpec,
} from '@freshet/model';
import { FreshetError, feedbackEventSchema } from '@freshet/protocol';
import { Joiner, type JoinedExample, type JoinerOptionsInput } from '@freshet/worker';

/**
 * The labelled examples of any data ref `freshet replay` accepts, in the order a worker would
 * train them, for the benches that run without a cluster. Criteo files are read as the PyTorch
 * peer reads them (one example per line); every other kind goes through its dataset reader and
 * one in-process {@link Joiner} with the worker's default options, on the data's own timestamps:
 * impressions are joined with their clicks, ratings labelled, and unclicked impressions become
 * negatives when a later event closes their window (the rest at the end). So a bench learns the
 * examples the cluster would learn, labelled as the worker labels them, not a re-implementation.
 * They are then put in the order of the events they describe (the impression's, else the
 * rating's or example's), the reader's time order: the joiner emits a positive at its click and a negative minutes later, so in
 * emission order a window of examples holds one label at a time and its AUC says nothing.
 */

/** What {@link loadBenchData} read. */
export interface BenchData {
  /** The ref as given (`kind:PATH`). */
  ref: string;
  kind: string;
  /** The data file (criteo) or folder/file the reader opened; absolute. */
  path: string;
  examples: Example[];
  /**
   * The model fields the data carries: Criteo's 13 log1p numerics and 26 categoricals; for other
   * kinds each feature the examples hold, typed as its reader (or the csv spec) typed its values.
   */
  fields: FieldSpec[];
  /** Events read, and what the reader or the joiner did not turn into examples. */
  events: number;
  invalid: number;
  /** True when `limit` cut the data short. */
  limited: boolean;
  dropped: Record<string, number>;
}

/** Options of {@link loadBenchData}. */
export interface BenchDataOptions {
  /** The csv spec (object or JSON file) for `csv:` refs. */
  spec?: CsvSpecInput | string;
  /** At most this many examples (the first ones). */
  limit?: number;
  /** Only the first this many events of event data (as `freshet replay --limit` publishes). */
  eventLimit?: number;
  /** Joiner options for event data (default: the worker's). */
  joiner?: JoinerOptionsInput;
}

function readCriteoExamples(path: string, limit: number | undefined): Example[] {
  const out: Example[] = [];
  for (const line of readFileSync(path, 'utf8').split('\n')) {
    if (limit !== undefined && out.length >= limit) break;
    if (line.length === 0) continue;
    const ex = parseCriteoLine(line);
    if (ex) out.push(ex);
  }
  return out;
}

/**
 * The fields of a model on `examples`: a feature whose values are all strings is categorical, all
 * numbers numeric (standardised by running statistics, as scales of arbitrary logs are unknown),
 * token lists tokens; mixed strings and numbers are categorical. A field whose value is the same
 * every time its example's `item` is seen belongs to the item tower (two-tower models), the rest
 * to the user tower. Fields come sorted by name, so the model does not depend on event order.
 */
export function inferFields(examples: readonly Example[]): FieldSpec[] {
  const kinds = new Map<string, Set<'s' | 'n' | 't'>>();
  const itemValue = new Map<string, Map<string, string>>();
  const notItem = new Set<string>();
  let maxTokens = 1;
  for (const ex of examples) {
    const item = ex.features.item;
    for (const [name, v] of Object.entries(ex.features)) {
      let k = kinds.get(name);
      if (!k) kinds.set(name, (k = new Set<'s' | 'n' | 't'>()));
      if (Array.isArray(v)) {
        k.add('t');
        maxTokens = Math.max(maxTokens, v.length);
      } else k.add(typeof v === 'number' ? 'n' : 's');
      if (name === 'item' || typeof item !== 'string' || notItem.has(name)) continue;
      let m = itemValue.get(name);
      if (!m) itemValue.set(name, (m = new Map<string, string>()));
      const key = JSON.stringify(v);
      const prev = m.get(item);
      if (prev === undefined) m.set(item, key);
      else if (prev !== key) notItem.add(name);
    }
  }
  const hasItem = kinds.has('item');
  const fields: FieldSpec[] = [];
  for (const name of [...kinds.keys()].sort()) {
    const k = kinds.get(name)!;
    const tower = hasItem && (name === 'item' || !notItem.has(name)) ? 'item' : 'user';
    if (k.has('t'))
      fields.push({ kind: 'tokens', name, tower, maxTokens: Math.min(32, maxTokens), lowercase: true });
    else if (k.has('s')) fields.push({ kind: 'categorical', name, tower, emptyAsMissing: false });
    else
      fields.push({
        kind: 'numeric',
        name,
        tower,
        transform: 'standardise',
        missing: 0,
        keepNumeric: false,
      });
  }
  return fields;
}

/**
 * Reads `ref` (`criteo:PATH`, `movielens:PATH`, `obd:PATH`, `csv:PATH` with `spec`,
 * `synthetic[:k=v,...]`) into labelled examples. Relative paths resolve against the current
 * directory (the CLI resolves `$FRESHET_DATA_DIR` before). No example at all is a CONFIG error.
 */
export async function loadBenchData(ref: string, o: BenchDataOptions = {}): Promise<BenchData> {
  const { kind, path: raw } = parseDatasetRef(ref);
  const path = kind === 'synthetic' ? raw : resolve(raw);
  const dropped: Record<string, number> = {};
  let events = 0;
  let invalid = 0;
  let examples: Example[];
  let fields: FieldSpec[] | undefined;
  if (kind === 'criteo') {
    examples = readCriteoExamples(path, o.limit ?? o.eventLimit);
    events = examples.length;
    fields = featureSpecSchema.parse(criteoFeatureSpec()).fields;
  } else {
    if (kind === 'csv' && o.spec === undefined)
      throw new FreshetError('CONFIG', `${ref}: csv data needs a spec (--spec SPEC.json)`);
    const joiner = new Joiner(o.joiner ?? {});
    const joined: { ex: Example; at: number }[] = [];
    // Where in the stream each event came: an example goes where its impression (or itself) was.
    const arrival = new Map<string, number>();
    const take = (xs: readonly JoinedExample[]) => {
      for (const x of xs)
        joined.push({
          ex: { features: x.features, label: x.label, weight: x.weight },
          at: arrival.get(x.impressionId ?? x.eventId) ?? Number.MAX_SAFE_INTEGER,
        });
    };
    const src = openDataset(kind === 'synthetic' ? ref : `${kind}:${path}`, {
      ...(o.spec !== undefined ? { spec: o.spec } : {}),
    });
    for await (const e of src) {
      if (o.eventLimit !== undefined && events >= o.eventLimit) break;
      events++;
      const parsed = feedbackEventSchema.safeParse(e);
      if (!parsed.success) {
        invalid++;
        continue;
      }
      if (!arrival.has(parsed.data.id)) arrival.set(parsed.data.id, events);
      take(
        joiner.push(parsed.data, (reason) => {
          dropped[reason] = (dropped[reason] ?? 0) + 1;
        }),
      );
    }
    take(joiner.flush());
    joined.sort((a, b) => a.at - b.at);
    examples = joined.slice(0, o.limit ?? joined.length).map((j) => j.ex);
  }
  if (examples.length === 0)
    throw new FreshetError('CONFIG', `${ref}: no labelled examples (${events} events read)`);
  const limited =
    (o.limit !== undefined && examples.length >= o.limit) ||
    (o.eventLimit !== undefined && events >= o.eventLimit);
  return {
    ref,
    kind,
    path,
    examples,
    fields: fields ?? inferFields(examples),
    events,
    invalid,
    limited,
    dropped,
  };
}
