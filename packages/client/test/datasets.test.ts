import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { feedbackEventSchema, subjects, type FeedbackEventInput } from '@freshet/protocol';
import { uniqueName, useNats } from '@freshet/testkit';
import { openDataset, runReplay, splitCsvLine, SyntheticWorld, syntheticEvents } from '../src/index.js';

// Shared data lives next to the repository: <repo>/../shared/data.
const data = fileURLToPath(new URL('../../../../shared/data/', import.meta.url));
const nats = useNats();

async function collect(it: AsyncIterable<FeedbackEventInput> | Iterable<FeedbackEventInput>) {
  const out: FeedbackEventInput[] = [];
  for await (const e of it) out.push(e);
  return out;
}
function expectValidAndOrdered(events: FeedbackEventInput[]) {
  for (const e of events) expect(feedbackEventSchema.safeParse(e).success, JSON.stringify(e)).toBe(true);
  for (let i = 1; i < events.length; i++) expect(events[i]!.ts).toBeGreaterThanOrEqual(events[i - 1]!.ts);
}

describe('dataset readers', () => {
  it('splits CSV with quotes and keeps empty trailing fields', () => {
    expect(splitCsvLine('a,"b,c","d""e",,')).toEqual(['a', 'b,c', 'd"e', '', '']);
    expect(splitCsvLine('1\t\t3\t', '\t')).toEqual(['1', '', '3', '']);
  });

  it('reads the Criteo TSV head: 10k labelled examples, 21.8% positives, missing values left out', async () => {
    const ev = await collect(openDataset(`criteo:${data}criteo-kaggle-head10k/train_head10k.txt`));
    expect(ev).toHaveLength(10_000);
    expectValidAndOrdered(ev.slice(0, 500));
    const pos = ev.filter((e) => e.kind === 'example' && e.label === 1).length;
    expect(pos).toBe(2182);
    const first = ev[0]!;
    expect(first.kind === 'example' && first.features).toMatchObject({
      I1: 1,
      I2: 1,
      I3: 5,
      I4: 0,
      I5: 1382,
      C1: '68fd1e64',
    });
    expect(first.kind === 'example' && 'I12' in first.features).toBe(false); // empty field
  });

  it('reads Criteo as impression + click pairs, and DeepCTR CSV with a header', async () => {
    const ev = await collect(
      openDataset(`criteo:${data}criteo-kaggle-head10k/train_head10k.txt`, {
        criteoMode: 'impression-click',
        limit: 1000,
      }),
    );
    const imps = ev.filter((e) => e.kind === 'impression').length;
    const clicks = ev.filter((e) => e.kind === 'click').length;
    expect(imps).toBe(1000);
    expect(clicks).toBeGreaterThan(100);
    expectValidAndOrdered(ev);
    const small = await collect(openDataset(`criteo:${data}criteo-deepctr-sample/criteo_sample.txt`));
    expect(small).toHaveLength(200);
    expect(small.filter((e) => e.kind === 'example' && e.label === 1)).toHaveLength(49);
  });

  it('reads MovieLens 100k and latest-small as ratings sorted by (timestamp, user, item)', async () => {
    const ml = await collect(openDataset(`movielens:${data}movielens-100k/u.data`));
    expect(ml).toHaveLength(100_000);
    expectValidAndOrdered(ml.slice(0, 2000));
    for (let i = 1; i < ml.length; i++) {
      const a = ml[i - 1]!;
      const b = ml[i]!;
      expect(
        a.ts < b.ts ||
          (a.ts === b.ts &&
            (Number(a.user) < Number(b.user) ||
              (a.user === b.user &&
                a.kind === 'rating' &&
                b.kind === 'rating' &&
                Number(a.item) < Number(b.item)))),
      ).toBe(true);
    }
    expect(ml[0]!.ts).toBe(Date.UTC(1997, 8, 20, 3, 5, 10));
    const latest = await collect(openDataset(`movielens:${data}movielens-latest-small`, { limit: 5000 }));
    expect(latest).toHaveLength(5000);
    expect(latest.every((e) => e.kind === 'rating' && e.rating >= 0.5 && e.rating <= 5)).toBe(true);
    expectValidAndOrdered(latest);
  });

  it('reads Open Bandit logs keeping positions and propensities', async () => {
    const ev = await collect(openDataset(`obd:${data}open-bandit-dataset-small/random/men/men.csv`));
    const imps = ev.filter((e) => e.kind === 'impression');
    expect(imps).toHaveLength(10_000);
    expect(ev.filter((e) => e.kind === 'click')).toHaveLength(46);
    const i0 = imps[0]!;
    expect(i0.kind === 'impression' && i0.propensity).toBeCloseTo(1 / 34);
    expect(i0.kind === 'impression' && [0, 1, 2].includes(i0.position!)).toBe(true);
    expect(i0.kind === 'impression' && i0.features).toHaveProperty('item_feature_0');
    expect(i0.meta).toEqual({ policy: 'random', campaign: 'men' });
    for (const e of ev.slice(0, 300)) expect(feedbackEventSchema.safeParse(e).success).toBe(true);
  });

  it('maps any CSV through a spec file', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'freshet-csv-'));
    writeFileSync(
      join(dir, 'log.csv'),
      'when,uid,doc,clicked,score,title\n' +
        '1700000002,u2,d9,1,0.5,"Red, shoes"\n' +
        '1700000001,u1,d3,0,1.5,blue hat\n',
    );
    writeFileSync(
      join(dir, 'spec.json'),
      JSON.stringify({
        kind: 'impression-click',
        label: { column: 'clicked' },
        user: 'uid',
        item: 'doc',
        timestamp: { column: 'when', unit: 's' },
        numeric: ['score'],
        text: ['title'],
      }),
    );
    const ev = await collect(
      openDataset(`csv:${join(dir, 'log.csv')}`, { spec: join(dir, 'spec.json'), idPrefix: 'x' }),
    );
    expect(ev.map((e) => [e.kind, e.user, e.ts])).toEqual([
      ['impression', 'u1', 1700000001000],
      ['impression', 'u2', 1700000002000],
      ['click', 'u2', 1700000002001],
    ]);
    expect(ev[1]!.kind === 'impression' && ev[1]!.features).toEqual({ score: 0.5, title: ['red', 'shoes'] });
    expectValidAndOrdered(ev);
    await expect(
      collect(openDataset(`csv:${join(dir, 'log.csv')}`, { spec: { label: { column: 'nope' } } })),
    ).rejects.toThrow(/no column "nope"/);
    expect(() => openDataset('parquet:/x')).toThrow(/unknown dataset/);
  });
});

describe('synthetic world', () => {
  it('is deterministic by seed and its preferences drift at the chosen time', () => {
    const a = [...syntheticEvents({ seed: 5, requests: 300 })];
    const b = [...syntheticEvents({ seed: 5, requests: 300 })];
    const c = [...syntheticEvents({ seed: 6, requests: 300 })];
    expect(b).toEqual(a);
    expect(c).not.toEqual(a);
    expectValidAndOrdered(a);

    const drift = Date.UTC(2024, 0, 1) + 20_000 * 100;
    const w = new SyntheticWorld({ seed: 5, requests: 40_000, driftAtTs: drift });
    // Empirical click rate per (user, item category) before and after: tastes changed.
    const rates = [new Map<string, [number, number]>(), new Map<string, [number, number]>()];
    const cat = new Map<string, string>();
    for (const e of w.events()) {
      const m = rates[e.ts >= drift ? 1 : 0]!;
      if (e.kind === 'impression') {
        const k = `${e.user}|${String(e.features?.category)}`;
        cat.set(`${e.request}|${e.item}`, k);
        const r = m.get(k) ?? [0, 0];
        r[0]++;
        m.set(k, r);
      } else if (e.kind === 'click') m.get(cat.get(`${e.request}|${e.item}`)!)![1]++;
    }
    let diff = 0;
    let n = 0;
    for (const [k, [imp, clk]] of rates[0]!) {
      const after = rates[1]!.get(k);
      if (!after || imp < 30 || after[0] < 30) continue;
      diff += Math.abs(clk / imp - after[1] / after[0]);
      n++;
    }
    expect(n).toBeGreaterThan(50);
    expect(diff / n).toBeGreaterThan(0.1); // mean absolute CTR change per (user, category)
    expect(w.clickProbability(3, 7, drift - 1)).not.toBeCloseTo(w.clickProbability(3, 7, drift), 3);
  });
});

describe('runReplay', () => {
  it('publishes a dataset in time order and reports a summary', async () => {
    const cluster = uniqueName('rep').replace(/[^A-Za-z0-9_-]/g, '_');
    const progress: number[] = [];
    const summary = await runReplay({
      data: `movielens:${data}movielens-100k/u.data`,
      nats: nats.nc,
      cluster,
      partitions: 2,
      limit: 3000,
      onProgress: (p) => progress.push(p.events),
      progressEveryMs: 5,
    });
    expect(summary).toMatchObject({
      events: 3000,
      acked: 3000,
      failed: 0,
      byKind: { rating: 3000 },
      aborted: false,
    });
    expect(progress.at(-1)).toBe(3000);
    const jsm = await nats.nc.jetstreamManager();
    expect((await jsm.streams.info(subjects(cluster).feedbackStream)).state.messages).toBe(3000);
    const m = await jsm.streams.getMessage(subjects(cluster).feedbackStream, { seq: 1 });
    const first = JSON.parse(new TextDecoder().decode(m.data)) as { ts: number; meta: { srcTs: number } };
    expect(first.meta.srcTs).toBe(Date.UTC(1997, 8, 20, 3, 5, 10));
    expect(Math.abs(first.ts - Date.now())).toBeLessThan(60_000); // re-stamped to now
  });

  it('paces by rate', async () => {
    const cluster = uniqueName('rep').replace(/[^A-Za-z0-9_-]/g, '_');
    const t0 = performance.now();
    const s = await runReplay({
      data: 'synthetic:requests=40,slate=2',
      nats: nats.nc,
      cluster,
      rate: 200,
      limit: 60,
    });
    const ms = performance.now() - t0;
    expect(s.events).toBe(60);
    expect(ms).toBeGreaterThan(250); // 60 events at 200/s ≈ 300 ms
  });

  it('stops on abort', async () => {
    const cluster = uniqueName('rep').replace(/[^A-Za-z0-9_-]/g, '_');
    const ac = new AbortController();
    const s = await runReplay({
      data: 'synthetic:requests=100000',
      nats: nats.nc,
      cluster,
      rate: 1000,
      signal: ac.signal,
      onProgress: (p) => p.events > 50 && ac.abort(),
      progressEveryMs: 10,
    });
    expect(s.aborted).toBe(true);
    expect(s.events).toBeLessThan(5000);
    expect(s.acked).toBe(s.events);
  });
});
