import { describe, expect, it } from 'vitest';
import { runPersonalization } from '@freshet/bench';
import { mergeProgressive } from '@freshet/protocol';
import { uniqueName, useNats } from '@freshet/testkit';
import { compileWorkerOptions, ProgressiveMetrics } from '@freshet/worker';
import { clusterView } from '../src/actor-view.js';
import { defaultModel } from '../src/cluster-config.js';
import { collectStatus, renderStatus } from '../src/commands/status.js';
import type { ActorStatus } from '../src/discovery.js';
import type { ModelConfigInput } from '@freshet/model';

const worker = (id: string, status: Record<string, unknown>): ActorStatus => ({
  role: 'worker',
  id,
  cluster: 'c',
  serviceId: id,
  version: '0',
  started: '',
  metadata: {},
  endpoints: [],
  status,
});

describe('rolling progressive AUC in freshet status', () => {
  const nats = useNats();

  it('a real worker reports the AUC of its last metrics.window examples, and status shows it', async () => {
    let seen = false;
    await runPersonalization({
      model: defaultModel as ModelConfigInput,
      url: nats.url,
      cluster: uniqueName('win'),
      users: 10,
      requests: 20,
      worker: { metrics: { window: 300 } },
      inspect: async (w) => {
        const v = await collectStatus(nats.nc, { cluster: w.cluster, maxWaitMs: 300 });
        expect(v.workers).toHaveLength(1);
        const x = v.workers[0]!;
        expect(x.examples).toBe(400);
        // the window holds the last 300 of 400 examples, not all of them
        expect(x.window).toBe(300);
        expect(x.windowAuc).not.toBeNull();
        // one worker: the merged window histogram is its window, exactly
        expect(v.progressive?.examples).toBe(400);
        expect(v.progressive?.windowExamples).toBe(300);
        const own = mergeProgressive([w.worker.status().progressiveWindowHistogram]);
        expect(own.examples).toBe(300);
        expect(v.progressive!.windowAuc!).toBeCloseTo(own.auc, 9);
        // and near the worker's exact sort: 1024 bins give scores within a bin half credit (a
        // model this small puts many in one: 0.008 against 0.016 was seen)
        expect(Math.abs(v.progressive!.windowAuc! - x.windowAuc!)).toBeLessThan(0.05);
        const text = renderStatus(v, nats.url);
        expect(text).toContain('WINDOW AUC');
        expect(text).toContain('(last 300)');
        seen = true;
      },
    });
    expect(seen).toBe(true);
  }, 30_000);

  it('merges the workers’ windows into one AUC instead of averaging theirs', () => {
    // Each worker ranks its own window perfectly, but b's scores all sit below a's.
    const a = new ProgressiveMetrics({ window: 20 });
    const b = new ProgressiveMetrics({ window: 20 });
    a.add([0.1, 0.1, 0.1, 0.1], [0, 0, 0, 0]); // pushed out of a's window below
    a.add(Array(10).fill(0.6).concat(Array(10).fill(0.9)), Array(10).fill(0).concat(Array(10).fill(1)));
    b.add(Array(10).fill(0.1).concat(Array(10).fill(0.4)), Array(10).fill(0).concat(Array(10).fill(1)));
    expect(a.snapshot().windowAuc).toBe(1);
    expect(b.snapshot().windowAuc).toBe(1);
    const status = (m: ProgressiveMetrics) => ({
      progressive: m.snapshot(),
      progressiveHistogram: m.mergeable(),
      progressiveWindowHistogram: m.windowMergeable(),
    });
    const v = clusterView([worker('a', status(a)), worker('b', status(b))], 'c');
    expect(v.progressive?.windowExamples).toBe(40);
    // pairs: a+>a-, b+>b-, a+>b-, b+<a-: 3 of 4 blocks
    expect(v.progressive?.windowAuc).toBeCloseTo(0.75, 6);
    expect(mergeProgressive([a.windowMergeable()]).examples).toBe(20);
  });

  it('keeps the window bounded: metrics.window over 1M is refused', () => {
    const base = { cluster: 'c', model: defaultModel as ModelConfigInput, shards: 1, partitions: 1 };
    expect(() => compileWorkerOptions({ ...base, metrics: { window: 2_000_000 } })).toThrow(/window/);
    expect(compileWorkerOptions({ ...base, metrics: { window: 500 } }).metrics.window).toBe(500);
  });
});
