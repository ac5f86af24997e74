import { describe, expect, it } from 'vitest';
import { kvKeys } from '@freshet/nats';
import { uniqueName, useNats } from '@freshet/testkit';
import { agreeParts, decisionKey, pruneDecisions } from '../src/manifest-decisions.js';

const nats = useNats();

async function bucket() {
  const name = uniqueName('mfd').replace(/[^A-Za-z0-9_-]/g, '');
  const jsm = await nats.nc.jetstreamManager();
  const kv = await nats.nc.jetstream().views.kv(name, { history: 1 });
  const leader = await nats.nc.jetstream().views.kv(name, { bindOnly: true, allow_direct: false });
  return { kv, leader, keys: (filter: string) => kvKeys(jsm, name, filter) };
}

describe('recovery decisions of mixed batches', () => {
  it('the first recoverer decides; later ones, whatever they saw, get its parts', async () => {
    const { leader } = await bucket();
    const [a, b] = await Promise.all([
      agreeParts(leader, 'batch1', [1]),
      agreeParts(leader, 'batch1', [0, 1]),
    ]);
    // whichever came first, both recover the same parts
    expect(a).toEqual(b);
    expect(await agreeParts(leader, 'batch1', [0, 1, 2, 3])).toEqual(a);
    expect(await agreeParts(leader, 'batch2', [2, 3])).toEqual([2, 3]);
  });

  it('prunes decisions older than the age given, and only those', async () => {
    const { leader, keys } = await bucket();
    await agreeParts(leader, 'old', [0]);
    await new Promise((r) => setTimeout(r, 300));
    await agreeParts(leader, 'new', [1]);
    expect(await pruneDecisions(leader, keys, 200)).toBe(1);
    expect((await leader.get(decisionKey('old')))?.operation).toBe('DEL');
    expect((await leader.get(decisionKey('new')))?.operation).toBe('PUT');
    expect(await pruneDecisions(leader, keys, 60_000)).toBe(0);
    // a pruned decision can be made again
    expect(await agreeParts(leader, 'old', [3])).toEqual([3]);
  });
});
