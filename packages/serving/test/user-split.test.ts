import { describe, expect, it } from 'vitest';
import { pickCanary, userPoint } from '@freshet/serving';

describe('deterministic user split', () => {
  it('puts a user at the same point every time, in [0, 1), salted', () => {
    for (let i = 0; i < 200; i++) {
      const p = userPoint(`u${i}`, 'prod');
      expect(p).toBeGreaterThanOrEqual(0);
      expect(p).toBeLessThan(1);
      expect(userPoint(`u${i}`, 'prod')).toBe(p);
    }
    // another salt moves users: not the same split for every cluster
    const moved = Array.from(
      { length: 200 },
      (_, i) => userPoint(`u${i}`, 'prod') !== userPoint(`u${i}`, 'other'),
    );
    expect(moved.filter(Boolean).length).toBeGreaterThan(190);
  });

  it('serves each canary its fraction of users, within binomial noise', () => {
    const n = 20_000;
    const counts = [0, 0, 0];
    for (let i = 0; i < n; i++) {
      const c = pickCanary(`user-${i}`, 'prod', [0.1, 0.25]);
      counts[c + 1]!++;
      expect(pickCanary(`user-${i}`, 'prod', [0.1, 0.25])).toBe(c);
    }
    // sd of a share p over n users: sqrt(p(1-p)/n) ≤ 0.0035; 5 sd
    expect(Math.abs(counts[1]! / n - 0.1)).toBeLessThan(0.018);
    expect(Math.abs(counts[2]! / n - 0.25)).toBeLessThan(0.018);
    expect(Math.abs(counts[0]! / n - 0.65)).toBeLessThan(0.018);
  });

  it('keeps a canary user when the canary grows (ranges are nested)', () => {
    for (let i = 0; i < 2000; i++) {
      const u = `user-${i}`;
      if (pickCanary(u, 'prod', [0.05]) === 0) expect(pickCanary(u, 'prod', [0.2])).toBe(0);
    }
    expect(pickCanary('anyone', 'prod', [])).toBe(-1);
    expect(pickCanary('anyone', 'prod', [1])).toBe(0);
    expect(pickCanary('anyone', 'prod', [0])).toBe(-1);
  });
});
