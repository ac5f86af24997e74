import type { FeedbackEventInput } from '@freshet/protocol';
import type { Publisher } from './publisher.js';

/**
 * Publishes events as they happen: each at its own timestamp (wall clock), in order, until the
 * events run out or `signal` aborts. `each` runs after every publish (awaited: it may pace or
 * report). A publish that fails because the abort closed the publisher ends it quietly; any
 * other failure is thrown. Resolves with the number of events published.
 */
export async function publishLive(
  publisher: Publisher,
  events: Iterable<FeedbackEventInput>,
  o: { signal?: AbortSignal; each?: (ev: FeedbackEventInput) => unknown } = {},
): Promise<number> {
  let published = 0;
  for (const ev of events) {
    if (o.signal?.aborted) break;
    const wait = ev.ts - Date.now();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    try {
      await publisher.publish(ev);
    } catch (e) {
      if (o.signal?.aborted) break;
      throw e;
    }
    published++;
    await o.each?.(ev);
  }
  return published;
}
