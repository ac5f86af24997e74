import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createModel } from '@freshet/model';
import { featureId, shardOfKey, xorshift32 } from '@freshet/protocol';
import { uniqueName, useNats } from '@freshet/testkit';
import { exploreRanking } from '../src/exploration.js';
import { compileServingOptions } from '../src/serving-options.js';
import { ServingNode } from '../src/serving-node.js';
import { FakeShard } from './fake-shard.js';

const nats = useNats();
const model = {
  kind: 'wide-deep',
  embeddingDim: 4,
  hidden: [8],
  features: {
    fields: [
      { kind: 'categorical', name: 'user' },
      { kind: 'categorical', name: 'item' },
    ],
  },
};
const { spec, layout } = createModel(model as never);
const N_SHARDS = 2;
// five items whose wide weights make the greedy ranking a > b > c > d > e
const items = ['a', 'b', 'c', 'd', 'e'];
const EPS = 0.3;

let shards: FakeShard[];
let node: ServingNode;

interface Shown {
  item: string;
  score: number;
  index: number;
  propensity: number;
  explored: boolean;
}
async function rank(extra: Record<string, unknown> = {}) {
  const r = await fetch(`${node.httpUrl!}/v1/rank`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ user: 'u1', candidates: items.map((item) => ({ item })), k: 3, ...extra }),
  });
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- error and ranking bodies differ
  return { status: r.status, body: (await r.json()) as Record<string, any> };
}

beforeAll(async () => {
  const cluster = uniqueName('explore');
  shards = [];
  for (let s = 0; s < N_SHARDS; s++) shards.push(new FakeShard(nats.nc, cluster, s, N_SHARDS, spec));
  items.forEach((item, i) => {
    const k = new Uint32Array(2);
    featureId('item', item, k);
    const t = layout.wide!;
    shards[shardOfKey(t, k[0]!, k[1]!, N_SHARDS)]!.set(t, [[k[0]!, k[1]!, Float32Array.of(2 - i)]]);
  });
  for (const s of shards) await s.start();
  node = new ServingNode(
    { cluster, shards: N_SHARDS, model, exploration: { kind: 'epsilon-greedy', epsilon: EPS } },
    { nc: await nats.connect('serving-explore') },
  );
  await node.start();
  await node.whenReady();
});
afterAll(async () => {
  await node?.stop();
  shards?.forEach((s) => s.stop());
});

describe('exploration at serving', () => {
  it('epsilon-greedy: non-greedy picks at the rate ε(m−1)/m per slot, with propensities summing to 1', async () => {
    const greedy = await rank({ explore: { kind: 'none' } });
    expect((greedy.body.items as Shown[]).map((x) => x.item)).toEqual(['a', 'b', 'c']);
    expect(greedy.body.items[0]).not.toHaveProperty('propensity');

    const N = 400;
    const explored = [0, 0, 0];
    for (let r = 0; r < N; r++) {
      const { status, body } = await rank();
      expect(status).toBe(200);
      const shown = body.items as Shown[];
      expect(new Set(shown.map((x) => x.item)).size).toBe(3);
      const remaining = [...items];
      shown.forEach((x, s) => {
        const m = items.length - s;
        const best = remaining[0]!;
        // the slot's draw: the best remaining with 1 − ε + ε/m, any other with ε/m; over the m
        // remaining candidates that is (1 − ε + ε/m) + (m − 1) ε/m = 1
        expect(x.explored).toBe(x.item !== best);
        expect(x.propensity).toBeCloseTo(x.explored ? EPS / m : 1 - EPS + EPS / m, 12);
        const pBest = 1 - EPS + EPS / m;
        expect(pBest + (m - 1) * (EPS / m)).toBeCloseTo(1, 12);
        if (x.explored) explored[s]!++;
        remaining.splice(remaining.indexOf(x.item), 1);
      });
    }
    explored.forEach((count, s) => {
      const m = items.length - s;
      const expected = (EPS * (m - 1)) / m;
      const sd = Math.sqrt((expected * (1 - expected)) / N);
      expect(Math.abs(count / N - expected)).toBeLessThan(4 * sd);
    });
    expect(node.status().exploration).toEqual({
      rankings: N,
      explored: explored.reduce((a, b) => a + b, 0),
    });
  });

  it('softmax on a request: each first-slot item shown as often as its returned propensity says', async () => {
    const N = 300;
    const seen = new Map<string, { n: number; p: number }>();
    for (let r = 0; r < N; r++) {
      const { body } = await rank({ k: 1, explore: { kind: 'softmax', temperature: 1 } });
      const x = (body.items as Shown[])[0]!;
      const e = seen.get(x.item) ?? { n: 0, p: x.propensity };
      expect(x.propensity).toBeCloseTo(e.p, 9); // the same context gives the same distribution
      e.n++;
      seen.set(x.item, e);
    }
    // softmax of the logits at temperature 1 is proportional to the odds p / (1 − p)
    let sum = 0;
    for (const [, e] of seen) {
      sum += e.p;
      const sd = Math.sqrt((e.p * (1 - e.p)) / N);
      expect(Math.abs(e.n / N - e.p)).toBeLessThan(4 * sd + 1e-9);
    }
    expect(seen.has('a')).toBe(true);
    expect(sum).toBeLessThanOrEqual(1 + 1e-9);
    if (seen.size === items.length) expect(sum).toBeCloseTo(1, 6);
  });

  it('rejects bad exploration options with a clear error, on a request and in the node options', async () => {
    const bad = await rank({ explore: { kind: 'epsilon-greedy', epsilon: 1.5 } });
    expect(bad.status).toBe(400);
    expect(bad.body.error.code).toBe('BAD_REQUEST');
    expect(bad.body.error.message).toMatch(/explore\.epsilon/);
    expect(() => compileServingOptions({ model, exploration: { kind: 'thompson', epsilon: 0.1 } })).toThrow(
      /exploration/,
    );
  });
});

describe('exploreRanking', () => {
  it('ε = 1 is a uniformly random ranking; ε = 0 and none are greedy with propensity 1', () => {
    const scores = [0.1, 0.9, 0.5, 0.3];
    const g = exploreRanking(scores, 4, { kind: 'epsilon-greedy', epsilon: 0 }, xorshift32(3));
    expect(g.order).toEqual([1, 2, 3, 0]);
    expect(g.propensity).toEqual([1, 1, 1, 1]);
    expect(exploreRanking(scores, 2, { kind: 'none' }, xorshift32(3)).order).toEqual([1, 2]);
    const rnd = xorshift32(11);
    const first = [0, 0, 0, 0];
    for (let i = 0; i < 4000; i++) {
      const r = exploreRanking(scores, 4, { kind: 'epsilon-greedy', epsilon: 1 }, rnd);
      expect(r.propensity).toEqual([1 / 4, 1 / 3, 1 / 2, 1]);
      expect([...r.order].sort()).toEqual([0, 1, 2, 3]);
      first[r.order[0]!]!++;
    }
    for (const c of first) expect(Math.abs(c / 4000 - 0.25)).toBeLessThan(0.03);
  });
});
