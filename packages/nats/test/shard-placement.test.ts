import { describe, expect, it } from 'vitest';
import { subjects } from '@freshet/protocol';
import { uniqueName, useNats } from '@freshet/testkit';
import {
  placementKv,
  planPlacement,
  readLease,
  readPlacement,
  releaseLease,
  takeLease,
  writePlacement,
  type Placement,
} from '../src/shard-placement.js';

const at = (hosts: string[], epoch = 1): Placement => ({ epoch, hosts, at: 0 });
const counts = (hosts: string[]) =>
  hosts.reduce<Record<string, number>>((m, h) => ({ ...m, [h]: (m[h] ?? 0) + 1 }), {});

describe('planPlacement', () => {
  it('spreads shards evenly over the hosts, in order', () => {
    expect(planPlacement(undefined, 4, ['a', 'b'])).toEqual(['a', 'a', 'b', 'b']);
    expect(counts(planPlacement(undefined, 7, ['a', 'b', 'c']))).toEqual({ a: 3, b: 2, c: 2 });
    expect(planPlacement(undefined, 2, ['a', 'b', 'c'])).toEqual(['a', 'b']);
  });

  it('moves only what balance needs when hosts come and go', () => {
    const grown = planPlacement(at(['a', 'a', 'b', 'b']), 4, ['a', 'b', 'c', 'd']);
    expect(grown).toEqual(['a', 'c', 'b', 'd']);
    // back: the shards that left come home, the others stay
    expect(planPlacement(at(grown), 4, ['a', 'b'])).toEqual(['a', 'a', 'b', 'b']);
    // a host removed: only its shards move
    const before = planPlacement(undefined, 12, ['a', 'b', 'c']);
    const after = planPlacement(at(before), 12, ['a', 'c']);
    const moved = after.filter((h, i) => h !== before[i]);
    expect(moved).toHaveLength(4);
    expect(before.filter((h, i) => h !== after[i]).every((h) => h === 'b')).toBe(true);
    expect(counts(after)).toEqual({ a: 6, c: 6 });
    // the same hosts: nothing moves
    expect(planPlacement(at(before), 12, ['a', 'b', 'c'])).toEqual(before);
  });

  it('refuses bad host lists and a changed shard count', () => {
    expect(() => planPlacement(undefined, 4, [])).toThrow(/at least one host/);
    expect(() => planPlacement(undefined, 4, ['a', 'a'])).toThrow(/twice/);
    expect(() => planPlacement(undefined, 4, ['a.b'])).toThrow(/letters, digits/);
    expect(() => planPlacement(at(['a', 'b']), 4, ['a'])).toThrow(/fixed at init/);
  });
});

describe('placement and leases in KV (real JetStream)', () => {
  const nats = useNats();

  it('writes placements by compare-and-set and hands a lease to one host at a time', async () => {
    const cluster = uniqueName('place').replace(/[^A-Za-z0-9_-]/g, '');
    await nats.nc.jetstream().views.kv(subjects(cluster).kvBucket);
    const kv = await placementKv(nats.nc, cluster);
    expect(await readPlacement(kv)).toBeUndefined();

    const r1 = await writePlacement(kv, at(['a', 'b']), 0);
    // a second writer that read "nothing" loses
    await expect(writePlacement(kv, at(['b', 'a']), 0)).rejects.toMatchObject({ code: 'CONFLICT' });
    const r2 = await writePlacement(kv, at(['a', 'a'], 2), r1);
    await expect(writePlacement(kv, at(['b', 'b'], 2), r1)).rejects.toMatchObject({ code: 'CONFLICT' });
    expect((await readPlacement(kv))!).toMatchObject({
      revision: r2,
      value: { epoch: 2, hosts: ['a', 'a'] },
    });

    // a takes shard 0; b must wait until a releases it
    const a = await takeLease(kv, 0, 'a', 1);
    expect(a).toEqual({ taken: true, before: undefined });
    expect(await takeLease(kv, 0, 'b', 2)).toEqual({ taken: false, holder: 'a' });
    // a restart of a takes it again, and knows it held it last (its data dir is current)
    expect(await takeLease(kv, 0, 'a', 1)).toMatchObject({ taken: true, before: { holder: 'a', last: 'a' } });
    await expect(releaseLease(kv, 0, 'b', 2)).rejects.toMatchObject({ code: 'CONFLICT' });
    await releaseLease(kv, 0, 'a', 2);
    expect((await readLease(kv, 0))!.value).toMatchObject({ holder: null, last: 'a', epoch: 2 });
    // b takes it, and learns that a held it last (b's own copy, if any, is stale)
    expect(await takeLease(kv, 0, 'b', 2)).toMatchObject({
      taken: true,
      before: { holder: null, last: 'a' },
    });
    expect(await takeLease(kv, 0, 'a', 3)).toEqual({ taken: false, holder: 'b' });

    // two hosts racing for a free lease: exactly one gets it
    const race = await Promise.all(['c', 'd', 'e'].map((h) => takeLease(kv, 1, h, 3)));
    expect(race.filter((r) => r.taken)).toHaveLength(1);
  });
});
