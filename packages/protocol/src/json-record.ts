import type { z } from 'zod';
import { FreshetError } from './errors.js';

const dec = new TextDecoder();

/**
 * Parses a small JSON record read back from the bus or KV and validates it with `schema`;
 * anything else throws `BAD_REQUEST` naming `what` and the first failing path.
 */
export function decodeJsonRecord<S extends z.ZodType>(schema: S, data: Uint8Array, what: string): z.infer<S> {
  let raw: unknown;
  try {
    raw = JSON.parse(dec.decode(data));
  } catch (e) {
    throw new FreshetError('BAD_REQUEST', `${what} is not JSON`, { cause: e });
  }
  const r = schema.safeParse(raw);
  if (!r.success) {
    const i = r.error.issues[0];
    throw new FreshetError('BAD_REQUEST', `${what}: ${i?.path.join('.') ?? ''} ${i?.message ?? ''}`);
  }
  return r.data;
}
