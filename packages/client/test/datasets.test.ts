import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { feedbackEventSchema, subjects, type FeedbackEventInput } from '@freshet/protocol';
import {
  uniqueName,
  useNats,
  useTempDirs,
  writeCriteoFixture,
  writeCsvFixture,
  writeMovieLensFixture,
  writeOpenBanditFixture,
} from '@freshet/testkit';
import {
  ensureStream,
  openDataset,
  runReplay,
  splitCsvLine,
  streamPartitions,
  SyntheticWorld,
  syntheticEvents,
} from '../src/index.js';

const nats = useNats();
const tempDir = useTempDirs();

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

  it('reads a Criteo TSV: every labelled row, integers as numbers, missing integers left out', async () => {
    const fx = writeCriteoFixture(tempDir('criteo'), { rows: 3000, seed: 7 });
    const ev = await collect(openDataset(`criteo:${fx.path}`));
    expect(ev).toHaveLength(3000);
    expectValidAndOrdered(ev.slice(0, 500));
    const pos = ev.filter((e) => e.kind === 'example' && e.label === 1).length;
    expect(pos).toBe(fx.positives);
    expect(pos).toBeGreaterThan(0);
    ev.slice(0, 300).forEach((e, r) => {
      const row = fx.rows[r]!;
      const want: Record<string, string | number> = {};
      row.ints.forEach((x, i) => x !== null && (want[`I${i + 1}`] = x));
      row.cats.forEach((c, i) => (want[`C${i + 1}`] = c));
      expect(e.kind === 'example' && e.label).toBe(row.label);
      expect(e.kind === 'example' && e.features).toEqual(want);
    });
    // The fixture has missing integers (I12 mostly): the reader leaves them out.
    const missing = fx.rows.findIndex((r) => r.ints[11] === null);
    expect(missing).toBeGreaterThanOrEqual(0);
    const e = ev[missing]!;
    expect(e.kind === 'example' && 'I12' in e.features).toBe(false);
  });

  it('reads Criteo as impression + click pairs, and DeepCTR CSV with a header', async () => {
    const fx = writeCriteoFixture(tempDir('criteo'), { rows: 1500, seed: 8 });
    const ev = await collect(
      openDataset(`criteo:${fx.path}`, { criteoMode: 'impression-click', limit: 1000 }),
    );
    const imps = ev.filter((e) => e.kind === 'impression').length;
    const clicks = ev.filter((e) => e.kind === 'click').length;
    expect(imps).toBe(1000);
    expect(clicks).toBe(fx.rows.slice(0, 1000).filter((r) => r.label === 1).length);
    expect(clicks).toBeGreaterThan(100);
    expectValidAndOrdered(ev);
    const csv = writeCriteoFixture(tempDir('criteo-csv'), { rows: 200, seed: 9, format: 'csv' });
    const small = await collect(openDataset(`criteo:${csv.path}`));
    expect(small).toHaveLength(200);
    expect(small.filter((e) => e.kind === 'example' && e.label === 1)).toHaveLength(csv.positives);
    expect(small[0]!.kind === 'example' && small[0]!.features.C1).toBe(csv.rows[0]!.cats[0]);
  });

  it('reads MovieLens 100k and latest-small as ratings sorted by (timestamp, user, item)', async () => {
    const fx = writeMovieLensFixture(tempDir('ml'), { format: '100k', ratings: 3000, seed: 3 });
    const ml = await collect(openDataset(`movielens:${fx.file}`));
    expect(ml).toHaveLength(3000);
    expectValidAndOrdered(ml.slice(0, 2000));
    const want = [...fx.ratings]
      .sort((a, b) => a.ts - b.ts || a.user - b.user || a.item - b.item)
      .map((r) => [String(r.user), String(r.item), r.rating, r.ts * 1000]);
    expect(
      ml.map((e) => [e.user, e.kind === 'rating' && e.item, e.kind === 'rating' && e.rating, e.ts]),
    ).toEqual(want);
    // Ties on the second exist in the fixture, so the (user, item) tie-break is exercised.
    expect(new Set(fx.ratings.map((r) => r.ts)).size).toBeLessThan(fx.ratings.length);
    const latest = writeMovieLensFixture(tempDir('ml-latest'), {
      format: 'latest-small',
      ratings: 2000,
      seed: 4,
    });
    const l = await collect(openDataset(`movielens:${latest.dir}`, { limit: 500 }));
    expect(l).toHaveLength(500);
    expect(l.every((e) => e.kind === 'rating' && e.rating >= 0.5 && e.rating <= 5)).toBe(true);
    expect(l.some((e) => e.kind === 'rating' && !Number.isInteger(e.rating))).toBe(true);
    expectValidAndOrdered(l);
  });

  it('reads Open Bandit logs keeping positions and propensities', async () => {
    const fx = writeOpenBanditFixture(tempDir('obd'), { rows: 3000, seed: 5 });
    // The dataset root resolves to its first campaign log.
    const ev = await collect(openDataset(`obd:${fx.root}`));
    const imps = ev.filter((e) => e.kind === 'impression');
    expect(imps).toHaveLength(3000);
    expect(ev.filter((e) => e.kind === 'click')).toHaveLength(fx.clicks);
    expect(fx.clicks).toBeGreaterThan(0);
    imps.slice(0, 200).forEach((e, r) => {
      const row = fx.rows[r]!;
      if (e.kind !== 'impression') throw new Error(e.kind);
      expect(e.item).toBe(String(row.item));
      expect(e.position).toBe(row.position - 1);
      expect(e.propensity).toBeCloseTo(1 / 34);
      expect(e.ts).toBe(row.ts);
      expect(e.features?.item_feature_0).toBeCloseTo(fx.itemFeatures[row.item]![0], 10);
      expect(e.features?.user_feature_0).toBe(row.userFeatures[0]);
      expect(e.features?.affinity).toBe(row.affinity);
    });
    expect(imps[0]!.meta).toEqual({ policy: 'random', campaign: 'men' });
    for (const e of ev.slice(0, 300)) expect(feedbackEventSchema.safeParse(e).success).toBe(true);
  });

  it('maps a generated CSV through its spec file: sorted by time, quoted titles tokenised', async () => {
    const fx = writeCsvFixture(tempDir('csv'), { rows: 300, seed: 6 });
    const ev = await collect(openDataset(`csv:${fx.path}`, { spec: fx.specPath }));
    expectValidAndOrdered(ev);
    const imps = ev.filter((e) => e.kind === 'impression');
    expect(imps).toHaveLength(300);
    expect(ev.filter((e) => e.kind === 'click')).toHaveLength(fx.rows.filter((r) => r.clicked).length);
    const byTs = [...fx.rows].map((r, i) => ({ r, i })).sort((a, b) => a.r.when - b.r.when || a.i - b.i);
    imps.forEach((e, k) => {
      const { r } = byTs[k]!;
      if (e.kind !== 'impression') throw new Error(e.kind);
      expect([e.user, e.item, e.ts]).toEqual([r.uid, r.doc, r.when * 1000]);
      expect(e.features?.title).toEqual(
        r.title
          .toLowerCase()
          .split(/[^a-z]+/)
          .filter(Boolean),
      );
      expect('score' in (e.features ?? {})).toBe(r.score !== null);
    });
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
    const ml = writeMovieLensFixture(tempDir('ml-replay'), { ratings: 4000, seed: 11 });
    const summary = await runReplay({
      data: `movielens:${ml.file}`,
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
    expect(first.meta.srcTs).toBe(Math.min(...ml.ratings.map((r) => r.ts)) * 1000);
    expect(Math.abs(first.ts - Date.now())).toBeLessThan(60_000); // re-stamped to now
  });

  it('routes as an existing stream does, and refuses another partition count', async () => {
    const cluster = uniqueName('rep').replace(/[^A-Za-z0-9_-]/g, '_');
    await ensureStream(nats.nc, { cluster, partitions: 3 });
    const data = 'synthetic:requests=20,slate=2';
    await expect(runReplay({ data, nats: nats.nc, cluster, partitions: 8 })).rejects.toMatchObject({
      code: 'CONFIG',
      message: expect.stringContaining('3 partitions, not 8') as string,
    });
    const s = await runReplay({ data, nats: nats.nc, cluster });
    expect(s.failed).toBe(0);
    expect(await streamPartitions(nats.nc, cluster)).toBe(3);
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
