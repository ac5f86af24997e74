/** What a JetStream KV call's error means, by its API error code (or message, for older servers). */

/** JetStream's "wrong last sequence": a compare-and-set lost to a write in between. */
export function isConflict(e: unknown): boolean {
  const err = e as { api_error?: { err_code?: number }; message?: string };
  return err?.api_error?.err_code === 10071 || /wrong last sequence/i.test(err?.message ?? '');
}

/** "no message found": the key was never written (or purged away). */
export function isMissing(e: unknown): boolean {
  const err = e as { api_error?: { err_code?: number }; message?: string };
  return err?.api_error?.err_code === 10037 || /no message found/i.test(err?.message ?? '');
}
