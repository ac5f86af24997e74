import { featureId, FreshetError } from '@freshet/protocol';
import type { ShardCore } from './shard-core.js';

/**
 * The rows of one user on a shard (`freshet user forget`, docs/privacy.md). A categorical value
 * becomes the same 64-bit id in every sparse table (`featureId(field, value)`, see the model's
 * encoder), so the user's rows are `featureId(f, user)` for each field `f` that carries the user
 * id, in each sparse table. Crosses that include the user (user×item) hash the other value in
 * too and cannot be enumerated from the id: they are not covered (they expire by TTL).
 */
export function userKeys(user: string, fields: readonly string[]): Uint32Array {
  if (!user) throw new FreshetError('BAD_REQUEST', 'forget needs a non-empty user id');
  if (fields.length === 0) throw new FreshetError('BAD_REQUEST', 'forget needs at least one field');
  const keys = new Uint32Array(2 * fields.length);
  fields.forEach((f, i) => featureId(f, user, keys, 2 * i));
  return keys;
}

/** One sparse table's part of a forget: the logged keys and how many rows were present. */
export interface ForgetTable {
  t: number;
  name: string;
  keys: Uint32Array;
}

/** The evictions a forget needs, per sparse table (dense tables hold no per-user rows). */
export function forgetPlan(core: ShardCore, user: string, fields: readonly string[]): ForgetTable[] {
  const keys = userKeys(user, fields);
  return core.tables.filter((tab) => !tab.dense).map((tab) => ({ t: tab.id, name: tab.spec.name, keys }));
}
