import { describe, expect, it } from 'vitest';
import { runPersonalization } from '@freshet/bench';
import { defaultModel } from '@freshet/cli';
import type { ModelConfigInput } from '@freshet/model';
import { uniqueName, useNats } from '@freshet/testkit';

/**
 * Personalization through the whole loop with the local cluster's default model: 40 users see
 * items A and B; users 0–19 always click A, users 20–39 always click B. Impressions and clicks
 * go through JetStream as a publisher sends them, the worker joins them (unclicked impressions
 * become negatives when their attribution window closes), two shards apply the updates and the
 * serving node ranks from its replica (`runPersonalization` of @freshet/bench, which `freshet
 * bench personalization` prints). After 50 labelled examples per user, users with opposite
 * tastes must get opposite rankings.
 */
describe('personalization', () => {
  const nats = useNats();

  it('ranks each user’s preferred item first after 50 labelled examples per user', async () => {
    const r = await runPersonalization({
      model: defaultModel as ModelConfigInput,
      url: nats.url,
      cluster: uniqueName('pers'),
      users: 40,
      requests: 25,
    });
    expect(r.examples).toBe(40 * 25 * 2);
    expect(
      r.share_correct,
      `users ranked correctly: ${r.users_correct} of ${r.users}`,
    ).toBeGreaterThanOrEqual(0.95);
    // Opposite tastes, opposite A−B gaps: the groups are told apart, not just shifted together.
    expect(r.mean_gap_prefers_a).toBeGreaterThan(0);
    expect(r.mean_gap_prefers_b).toBeLessThan(0);
  });
});
