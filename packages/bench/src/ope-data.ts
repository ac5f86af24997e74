import { resolve } from 'node:path';
import { openDataset, parseDatasetRef, type CsvSpecInput } from '@freshet/client';
import type { Example, FieldSpec } from '@freshet/model';
import { FreshetError, feedbackEventSchema, type Features } from '@freshet/protocol';
import { Joiner, type JoinedExample, type JoinerOptionsInput } from '@freshet/worker';
import { inferFields } from './bench-data.js';

/**
 * The logged decisions of an Open Bandit-style log for off-policy evaluation, read through the
 * dataset readers `freshet replay` uses and one in-process {@link Joiner} with the worker's
 * options, so each decision is labelled, featurised and carries its logged propensity exactly as
 * the worker's joined example does. One decision per impression (a late positive raises its
 * impression's reward to 1), in the order the impressions were logged.
 */

/** One logged decision: a slot of a request, the item shown there, and what came of it. */
export interface LoggedDecision {
  /** The joined example's features (context, the shown item's features, position). */
  features: Features;
  item: string;
  /** 0-based slot (the impression's position; 0 when it has none). */
  slot: number;
  reward: number;
  propensity: number;
}

/** What {@link loadOpeLog} read. */
export interface OpeLog {
  ref: string;
  kind: string;
  decisions: LoggedDecision[];
  /** The training examples, one per decision, in the same order (label = reward). */
  examples: Example[];
  /** The candidate set: every item the log shows, sorted. */
  items: string[];
  /** Per item, its values of the item fields (those fixed per item, {@link inferFields}). */
  itemFeatures: Map<string, Features>;
  itemFields: string[];
  fields: FieldSpec[];
  events: number;
  invalid: number;
  /** Impressions without a logged propensity (or with 0): not evaluable, left out. */
  noPropensity: number;
}

export interface OpeLogOptions {
  spec?: CsvSpecInput | string;
  /** Only the first this many impressions (with or without a propensity). */
  limit?: number;
  joiner?: JoinerOptionsInput;
}

/** Reads the logged decisions of `ref` (any ref `replay` accepts whose impressions carry propensities). */
export async function loadOpeLog(ref: string, o: OpeLogOptions = {}): Promise<OpeLog> {
  const { kind, path: raw } = parseDatasetRef(ref);
  if (kind === 'criteo')
    throw new FreshetError(
      'CONFIG',
      `${ref}: criteo logs have no items or propensities to evaluate a policy on`,
    );
  if (kind === 'csv' && o.spec === undefined)
    throw new FreshetError('CONFIG', `${ref}: csv data needs a spec (--spec SPEC.json)`);
  const joiner = new Joiner(o.joiner ?? {});
  const byImpression = new Map<string, { d: LoggedDecision | undefined; at: number }>();
  let events = 0;
  let invalid = 0;
  let noPropensity = 0;
  let impressions = 0;
  const take = (xs: readonly JoinedExample[]) => {
    for (const x of xs) {
      if (x.impressionId === undefined || x.item === undefined) continue;
      const slot = byImpression.get(x.impressionId);
      if (!slot) continue;
      if (slot.d) {
        slot.d.reward = Math.max(slot.d.reward, x.label);
        continue;
      }
      if (x.propensity === undefined || !(x.propensity > 0)) {
        noPropensity++;
        byImpression.delete(x.impressionId);
        continue;
      }
      slot.d = {
        features: x.features,
        item: x.item,
        slot: x.position ?? 0,
        reward: x.label,
        propensity: x.propensity,
      };
    }
  };
  const src = openDataset(kind === 'synthetic' ? ref : `${kind}:${resolve(raw)}`, {
    ...(o.spec !== undefined ? { spec: o.spec } : {}),
  });
  for await (const e of src) {
    events++;
    const parsed = feedbackEventSchema.safeParse(e);
    if (!parsed.success) {
      invalid++;
      continue;
    }
    if (parsed.data.kind === 'impression' && !byImpression.has(parsed.data.id)) {
      // stopping at the next impression still reads the last one's click (logged right after it)
      if (o.limit !== undefined && impressions >= o.limit) break;
      impressions++;
      byImpression.set(parsed.data.id, { d: undefined, at: events });
    }
    take(joiner.push(parsed.data));
  }
  take(joiner.flush());
  const decisions = [...byImpression.values()]
    .filter((s) => s.d !== undefined)
    .sort((a, b) => a.at - b.at)
    .map((s) => s.d!);
  if (decisions.length === 0)
    throw new FreshetError(
      'CONFIG',
      `${ref}: no impressions with a logged propensity (${events} events read, ${noPropensity} without one)`,
    );
  const examples: Example[] = decisions.map((d) => ({
    features: d.features,
    label: d.reward,
    propensity: d.propensity,
  }));
  const fields = inferFields(examples);
  const itemFields = fields.filter((f) => f.tower === 'item').map((f) => f.name);
  if (!itemFields.includes('item'))
    throw new FreshetError(
      'CONFIG',
      `${ref}: the joined examples have no \`item\` feature to rank candidates by`,
    );
  const itemFeatures = new Map<string, Features>();
  for (const d of decisions) {
    if (itemFeatures.has(d.item)) continue;
    const f: Features = {};
    for (const name of itemFields) {
      const v = d.features[name];
      if (v !== undefined) f[name] = v;
    }
    itemFeatures.set(d.item, f);
  }
  const items = [...itemFeatures.keys()].sort((a, b) => a.localeCompare(b, 'en', { numeric: true }));
  return {
    ref,
    kind,
    decisions,
    examples,
    items,
    itemFeatures,
    itemFields,
    fields,
    events,
    invalid,
    noPropensity,
  };
}

/**
 * The features of a decision's context with candidate `item` in the slot: the logged features with
 * the item fields replaced by the candidate's. Features that vary with both the user and the item
 * (Open Bandit's `affinity` of the shown item) keep their logged value: the log has them for the
 * shown item only.
 */
export function candidateFeatures(log: OpeLog, d: LoggedDecision, item: string): Features {
  return { ...d.features, ...log.itemFeatures.get(item) };
}
