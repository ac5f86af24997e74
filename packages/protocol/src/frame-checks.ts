import { z } from 'zod';
import { FreshetError } from './errors.js';
import type { Frame } from './frame.js';

/**
 * What every binary message's decoder checks before a handler sees it (ps-messages.ts,
 * slice-rows.ts): header fields by zod, array counts and lengths against the header.
 */

/** A row or key count in a header. */
export const count = z
  .number()
  .int()
  .min(0)
  .max(1 << 24);
export const tableId = z.number().int().min(0).max(4095);

/** The frame's header, parsed by `schema`; BAD_REQUEST naming the first problem. */
export function header<T extends z.ZodType>(schema: T, frame: Frame): z.infer<T> {
  const r = schema.safeParse(frame.header);
  if (!r.success)
    throw new FreshetError('BAD_REQUEST', `bad header: ${r.error.issues[0]?.message ?? 'invalid'}`);
  return r.data;
}
export function wrongLength(what: string, got: number, want: number): never {
  throw new FreshetError('WRONG_LENGTH', `${what}: ${got} values, expected ${want}`);
}
export function expectArrays(frame: Frame, n: number): void {
  if (frame.arrays.length !== n)
    throw new FreshetError('BAD_FRAME', `${frame.arrays.length} arrays, expected ${n}`);
}
