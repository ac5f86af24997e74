import { describe, expect, it } from 'vitest';
import type { ModelConfigInput } from '@freshet/model';
import { feedbackEventSchema, type FeedbackEvent, type FeedbackEventInput } from '@freshet/protocol';
import { Joiner } from '../src/joiner.js';
import { ServedCtr } from '../src/served-ctr.js';
import { compileWorkerOptions } from '../src/worker-options.js';

// A second model's worker reads another cluster's stream through consumers of its own
// (docs/multi-model.md), and every worker counts served CTR by the model named on impressions.

const model: ModelConfigInput = { kind: 'lr', features: { fields: [{ kind: 'categorical', name: 'user' }] } };
const base = { cluster: 'prod-b', model, shards: 1, partitions: 1 };

describe('feedback from another cluster', () => {
  it('names its consumers after its own cluster there, once, and leaves a plain worker as it was', () => {
    const own = compileWorkerOptions(base);
    expect(own.feedback.cluster).toBe('prod-b');
    expect(own.consumer.durablePrefix).toBe('freshet-worker');
    const other = compileWorkerOptions({ ...base, feedback: { cluster: 'prod' } });
    expect(other.feedback.cluster).toBe('prod');
    expect(other.consumer.durablePrefix).toBe('freshet-worker-prod-b');
    // the worker compiles what it is given again: the suffix must not grow
    expect(compileWorkerOptions(other as never).consumer.durablePrefix).toBe('freshet-worker-prod-b');
    expect(() => compileWorkerOptions({ ...base, feedback: { cluster: 'no.dots' } })).toThrow(/cluster name/);
  });
});

const T0 = 1_700_000_000_000;
const W = 60_000;
let n = 0;
const ev = (e: Record<string, unknown>): FeedbackEvent =>
  feedbackEventSchema.parse({ id: `s${++n}`, user: 'u1', ...e } as FeedbackEventInput);
const imp = (request: string, item: string, ts: number, servedBy?: string) =>
  ev({ kind: 'impression', request, item, ts, ...(servedBy ? { meta: { servedBy } } : {}) });
const click = (request: string, item: string, ts: number) => ev({ kind: 'click', request, item, ts });

describe('served CTR per model', () => {
  it('counts each impression once by the model that served it, and its positives', () => {
    const j = new Joiner({ windowMs: W, lateWindowMs: 10 * W, orphanWaitMs: 30_000, maxSkewMs: 5_000 });
    const ctr = new ServedCtr();
    const feed = (out: ReturnType<Joiner['push']>) => out.forEach((e) => ctr.record(e));
    feed(j.push(imp('r1', 'a', T0, 'prod')));
    feed(j.push(click('r1', 'a', T0 + 10))); // positive
    feed(j.push(imp('r2', 'b', T0 + 20, 'prod-b')));
    feed(j.push(imp('r3', 'c', T0 + 30, 'prod-b')));
    feed(j.push(click('r3', 'c', T0 + 40))); // positive
    feed(j.push(imp('r4', 'd', T0 + 50))); // not marked: not counted
    feed(j.advance(T0 + 60 + W)); // r2 and r4 close as negatives
    // a late click after r2's negative: a positive, not a second impression
    feed(j.push(click('r2', 'b', T0 + 2 * W)));
    expect(ctr.snapshot()).toEqual({
      prod: { impressions: 1, positives: 1, ctr: 1 },
      'prod-b': { impressions: 2, positives: 2, ctr: 1 },
    });
  });

  it('keeps the model count bounded', () => {
    const ctr = new ServedCtr(2);
    const ex = (servedBy: string) =>
      ({
        features: {},
        label: 0,
        weight: 1,
        ts: T0,
        eventId: 'e',
        source: 'window',
        user: 'u',
        impressionId: 'i',
        servedBy,
      }) as never;
    for (const m of ['a', 'b', 'c', 'd']) ctr.record(ex(m));
    expect(Object.keys(ctr.snapshot()).sort()).toEqual(['a', 'b', 'other']);
    expect(ctr.snapshot().other!.impressions).toBe(2);
  });
});
