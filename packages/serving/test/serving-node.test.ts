import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createModel } from '@freshet/model';
import { featureId, shardOfKey, subjects } from '@freshet/protocol';
import { uniqueName, useNats, waitFor } from '@freshet/testkit';
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
      { kind: 'categorical', name: 'device' },
    ],
  },
};
const { spec, layout } = createModel(model as never);
const WIDE = layout.wide!;
const N_SHARDS = 2;
const te = new TextEncoder();
const td = new TextDecoder();

let cluster: string;
let shards: FakeShard[];
let node: ServingNode;
let base: string;

function itemKey(item: string): [number, number] {
  const k = new Uint32Array(2);
  featureId('item', item, k);
  return [k[0]!, k[1]!];
}
function ownerOf(t: number, [lo, hi]: [number, number]): FakeShard {
  return shards[shardOfKey(t, lo, hi, N_SHARDS)]!;
}
async function post(path: string, body: unknown, raw?: string) {
  const r = await fetch(base + path, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: raw ?? JSON.stringify(body),
  });
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- response shapes vary per case
  return { status: r.status, body: (await r.json()) as Record<string, any> };
}
const request = (items: string[], extra: Record<string, unknown> = {}) => ({
  user: 'u1',
  context: { device: 'ios' },
  candidates: items.map((item) => ({ item })),
  ...extra,
});

beforeAll(async () => {
  cluster = uniqueName('srv');
  shards = [];
  for (let s = 0; s < N_SHARDS; s++) {
    const f = new FakeShard(nats.nc, cluster, s, N_SHARDS, spec);
    await f.start();
    shards.push(f);
  }
  node = new ServingNode(
    { cluster, shards: N_SHARDS, model, http: { port: 0 } },
    { nc: await nats.connect('serving-a') },
  );
  await node.start();
  await node.whenReady();
  base = node.httpUrl!;
});
afterAll(async () => {
  await node?.stop();
  shards?.forEach((s) => s.stop());
});

describe('ServingNode over HTTP', () => {
  it('binds to loopback and reports health and readiness', async () => {
    expect(base).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect((await fetch(`${base}/healthz`)).status).toBe(200);
    const ready = await fetch(`${base}/readyz`);
    expect(ready.status).toBe(200);
    expect(((await ready.json()) as { ready: boolean }).ready).toBe(true);
  });

  it('scores candidates, and deltas make the scores move; a tombstone brings the default back', async () => {
    const items = ['a', 'b', 'c'];
    const first = await post('/v1/score', request(items, { requestId: 'r1' }));
    expect(first.status).toBe(200);
    expect(first.body.scores).toHaveLength(3);
    for (const p of first.body.scores as number[]) {
      expect(p).toBeGreaterThan(0);
      expect(p).toBeLessThan(1);
    }
    expect(first.body.requestId).toBe('r1');
    expect(first.body.versions).toHaveLength(N_SHARDS);

    const key = itemKey('b');
    const owner = ownerOf(WIDE, key);
    const eventTs = Date.now() - 5;
    owner.update([{ t: WIDE, set: [[key[0], key[1], new Float32Array([3])]] }], { eventTs: [eventTs] });
    const moved = await waitFor(
      async () => {
        const r = await post('/v1/score', request(items));
        return (r.body.scores as number[])[1]! > (first.body.scores as number[])[1]! + 0.2 ? r : undefined;
      },
      { message: 'score of b to rise after the delta' },
    );
    expect(moved.body.version).toBeGreaterThan(first.body.version as number);
    expect(moved.body.freshestAgeMs).not.toBeNull();
    expect((moved.body.scores as number[])[0]).toBeCloseTo((first.body.scores as number[])[0]!, 6);

    const ranked = await post('/v1/rank', request(items, { k: 2 }));
    expect(ranked.status).toBe(200);
    expect(ranked.body.items).toHaveLength(2);
    expect(ranked.body.items[0]).toMatchObject({ item: 'b', index: 1 });
    expect(ranked.body.items[0].score as number).toBeGreaterThanOrEqual(ranked.body.items[1].score as number);

    owner.update([{ t: WIDE, dead: [key] }]);
    await waitFor(
      async () => {
        const r = await post('/v1/score', request(items));
        return Math.abs((r.body.scores as number[])[1]! - (first.body.scores as number[])[1]!) < 1e-6;
      },
      { message: 'evicted row to fall back to the default' },
    );
    expect(node.status().freshness.count).toBeGreaterThanOrEqual(1);
    const metrics = await (await fetch(`${base}/metrics`)).text();
    expect(metrics).toMatch(/freshet_serving_freshness_milliseconds_count\{[^}]*\} [1-9]/);
  });

  it('gives unknown users, items and features the default embedding, not an error', async () => {
    const r = await post('/v1/score', {
      user: 'never-seen',
      context: { device: 'toaster', unknown_feature: 'x', n: 3 },
      candidates: [{ item: 'new-item', features: { colour: 'red' } }],
    });
    expect(r.status).toBe(200);
    expect(r.body.scores[0]).toBeGreaterThan(0);
  });

  it('answers bad requests with 400 and a reason, and keeps serving', async () => {
    const bad: [unknown, RegExp, string?][] = [
      [{ user: 'u', candidates: 'nope' }, /candidates/],
      [{ user: 5, candidates: [{ item: 'a' }] }, /user/],
      [{ user: 'u', candidates: [] }, /at least one candidate/],
      [
        { user: 'u', candidates: Array.from({ length: 1001 }, (_, i) => ({ item: `i${i}` })) },
        /at most 1000 candidates/,
      ],
      [{ user: 'u', candidates: [{ item: 'a' }], extra: 1 }, /extra|unrecognized/i],
      [{ user: 'u', context: { x: { nested: 1 } }, candidates: [{ item: 'a' }] }, /context/],
      [null, /JSON|body/i, '{"user": "u", candidates'],
      [
        null,
        /over 1048576 bytes/,
        JSON.stringify({ user: 'u', candidates: [{ item: 'x'.repeat(1_100_000) }] }),
      ],
    ];
    for (const [body, reason, raw] of bad) {
      const r = await post('/v1/score', body, raw);
      expect(r.status, JSON.stringify(r.body).slice(0, 200)).toBe(400);
      expect(r.body.error.code).toMatch(/BAD_REQUEST|OVERSIZE/);
      expect(r.body.error.message).toMatch(reason);
    }
    const rankBad = await post('/v1/rank', request(['a'], { k: 0 }));
    expect(rankBad.status).toBe(400);
    const ok = await post('/v1/rank', request(['a', 'b']));
    expect(ok.status).toBe(200);
    expect(node.status().requests.badRequest).toBeGreaterThanOrEqual(bad.length);
    expect(node.state).toBe('running');
  });
});

describe('ServingNode over NATS', () => {
  it('answers score and rank requests, and error envelopes for bad ones', async () => {
    const s = subjects(cluster);
    const reply = await nats.nc.request(s.score, te.encode(JSON.stringify(request(['a', 'b']))), {
      timeout: 2000,
    });
    const body = JSON.parse(td.decode(reply.data)) as { scores: number[]; node: string };
    expect(body.scores).toHaveLength(2);
    const rank = await nats.nc.request(
      s.rank,
      te.encode(JSON.stringify(request(['a', 'b', 'c'], { k: 1 }))),
      {
        timeout: 2000,
      },
    );
    expect((JSON.parse(td.decode(rank.data)) as { items: unknown[] }).items).toHaveLength(1);
    const bad = await nats.nc.request(s.score, te.encode('{not json'), { timeout: 2000 });
    expect(bad.headers?.get('Nats-Service-Error-Code')).toBe('400');
    expect(JSON.parse(td.decode(bad.data))).toMatchObject({
      error: { code: 'BAD_REQUEST', retryable: false },
    });
  });

  it('shares the queue group between two nodes and registers both with the service API', async () => {
    const second = new ServingNode(
      { cluster, shards: N_SHARDS, model, http: { enabled: false }, id: 'node-b' },
      { nc: await nats.connect('serving-b') },
    );
    await second.start();
    try {
      await second.whenReady();
      const s = subjects(cluster);
      const answeredBy = new Map<string, number>();
      await Promise.all(
        Array.from({ length: 60 }, async () => {
          const r = await nats.nc.request(s.score, te.encode(JSON.stringify(request(['a']))), {
            timeout: 2000,
          });
          const who = (JSON.parse(td.decode(r.data)) as { node: string }).node;
          answeredBy.set(who, (answeredBy.get(who) ?? 0) + 1);
        }),
      );
      expect([...answeredBy.keys()].sort()).toEqual([node.options.id, 'node-b'].sort());

      const infos = await waitFor(async () => {
        const found = [];
        for await (const i of await nats.nc.services.client().info(s.serviceName('serving'))) found.push(i);
        const mine = found.filter((i) => i.metadata?.cluster === cluster);
        return mine.length === 2 ? mine : undefined;
      });
      expect(infos.map((i) => i.metadata?.id).sort()).toEqual([node.options.id, 'node-b'].sort());
      expect(infos[0]!.metadata?.role).toBe('serving');
      const stats = [];
      for await (const st of await nats.nc.services.client().stats(s.serviceName('serving'))) stats.push(st);
      const data = stats.find((x) => x.metadata?.id === 'node-b')?.endpoints?.[0]?.data as { ready: boolean };
      expect(data.ready).toBe(true);
    } finally {
      await second.stop();
    }
    expect(second.state).toBe('stopped');
  });
});

describe('ServingNode options', () => {
  it('refuses a non-loopback HTTP host unless exposed on purpose', () => {
    expect(() => new ServingNode({ cluster: 'x', model, http: { host: '0.0.0.0' } })).toThrow(/expose/);
    expect(
      () => new ServingNode({ cluster: 'x', model, http: { host: '0.0.0.0', expose: true } }),
    ).not.toThrow();
  });
});
