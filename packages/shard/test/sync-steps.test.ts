import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { requestBytes } from '@freshet/nats';
import {
  decodePushReply,
  encodePush,
  FreshetError,
  parseModelSpec,
  subjects,
  type PushReply,
  type PushRequest,
} from '@freshet/protocol';
import { uniqueName, useNats } from '@freshet/testkit';
import type { ShardCore } from '../src/shard-core.js';
import { Shard } from '../src/shard.js';
import { combineStep, isSyncModel } from '../src/sync-steps.js';
import { inProcessCore } from './in-process-core.js';

const nats = useNats();
const dataDir = mkdtempSync(join(tmpdir(), 'freshet-sync-steps-'));
afterAll(() => rmSync(dataDir, { recursive: true, force: true }));

const DIM = 4;
const DENSE = 6;
const STEP_TIMEOUT_MS = 400;
const model = {
  name: 'sync-steps',
  tables: [
    { name: 'emb', dim: DIM, optimizer: { kind: 'adam', lr: 0.01 }, staleness: { policy: 'sync' } },
    {
      name: 'mlp',
      kind: 'dense',
      dim: DENSE,
      optimizer: { kind: 'adam', lr: 0.01 },
      staleness: { policy: 'sync' },
    },
  ],
};
const spec = parseModelSpec(model);

/** Worker w's batch of step `step`: keys overlapping the other worker's, a dense gradient, n examples. */
function workerPush(w: number, step: number, base: number, n: number): PushRequest {
  const rows = 5 + w;
  const keys = new Uint32Array(rows * 2);
  const grads = new Float32Array(rows * DIM);
  const counts = new Uint32Array(rows);
  for (let j = 0; j < rows; j++) {
    keys[2 * j] = (j * (w + 2) + step) % 9; // shares some keys with the other worker
    keys[2 * j + 1] = 3;
    counts[j] = 1 + ((j + w) % 3);
    for (let k = 0; k < DIM; k++) grads[j * DIM + k] = Math.sin(w * 17 + step * 5 + j * 3 + k) * 0.3;
  }
  const dense = new Float32Array(DENSE);
  for (let k = 0; k < DENSE; k++) dense[k] = Math.cos(w * 11 + step * 3 + k) * 0.2;
  return {
    id: `w${w}-step${step}.s0`,
    worker: `worker-${w}`,
    clock: step,
    base,
    examples: n,
    tables: [
      { t: 0, dim: DIM, keys, grads, counts },
      { t: 1, dim: DENSE, keys: new Uint32Array(2), grads: dense, counts: Uint32Array.of(n) },
    ],
  };
}

/**
 * The one push a single learner of the union batch makes, written out independently of
 * combineStep: per row Σ (nᵢ/N)·gᵢ in float64 (in push order), counts summed.
 */
function singleLearnerPush(reqs: PushRequest[], id: string): PushRequest {
  const total = reqs.reduce((a, r) => a + (r.examples ?? 1), 0);
  const tables: PushRequest['tables'] = [];
  for (let t = 0; t < 2; t++) {
    const dim = t === 0 ? DIM : DENSE;
    const rows = new Map<string, { lo: number; hi: number; g: number[]; c: number }>();
    for (const r of reqs) {
      const p = r.tables.find((x) => x.t === t);
      if (!p) continue;
      for (let i = 0; i < p.keys.length / 2; i++) {
        const k = `${p.keys[2 * i]}/${p.keys[2 * i + 1]}`;
        let row = rows.get(k);
        if (!row)
          rows.set(
            k,
            (row = { lo: p.keys[2 * i]!, hi: p.keys[2 * i + 1]!, g: new Array(dim).fill(0), c: 0 }),
          );
        row.c += p.counts[i]!;
        for (let d = 0; d < dim; d++) row.g[d]! += ((r.examples ?? 1) / total) * p.grads[i * dim + d]!;
      }
    }
    const list = [...rows.values()];
    tables.push({
      t,
      dim,
      keys: Uint32Array.from(list.flatMap((r) => [r.lo, r.hi])),
      grads: Float32Array.from(list.flatMap((r) => r.g)),
      counts: Uint32Array.from(list.map((r) => r.c)),
    });
  }
  return { id, worker: 'one', clock: 0, base: 0, examples: total, tables };
}

/** Every live row's weights and optimizer state, by key, and each table's step count. */
function stateOf(core: ShardCore): { rows: Map<string, number[]>; steps: number[] } {
  const rows = new Map<string, number[]>();
  for (const tab of core.tables) {
    const s = tab.store;
    for (let r = 0; r < s.end; r++) {
      if (!s.isLive(r)) continue;
      const at = s.valueOffset(r);
      const end = s.offset(r) + s.stride;
      rows.set(`${tab.id}:${s.keyLo(r)}:${s.keyHi(r)}`, [...s.chunkU(r).subarray(at, end)]);
    }
  }
  return { rows, steps: core.tables.map((t) => t.steps) };
}

describe('sync steps', () => {
  it('is for every table or none, and not for state pushes', () => {
    expect(isSyncModel(spec)).toBe(true);
    expect(
      isSyncModel(
        parseModelSpec({ ...model, tables: [{ ...model.tables[0], staleness: { policy: 'none' } }] }),
      ),
    ).toBe(false);
    expect(() =>
      isSyncModel(
        parseModelSpec({
          ...model,
          tables: [model.tables[0], { ...model.tables[1], staleness: { policy: 'scale' } }],
        }),
      ),
    ).toThrow(FreshetError);
  });

  it('merges rows by their whole 64-bit key, also where keys share a low word', () => {
    const a = workerPush(0, 1, 0, 32);
    const b = workerPush(1, 1, 0, 20);
    // b's rows: same low words as a's with other high words, then a's keys again
    const t = b.tables[0]!;
    for (let j = 0; j < 3; j++) t.keys[2 * j + 1] = 4 + j;
    const got = combineStep([a, b]);
    const want = singleLearnerPush([a, b], got.id);
    expect(got.tables.map((x) => [...x.keys])).toEqual(want.tables.map((x) => [...x.keys]));
    expect(got.tables.map((x) => [...x.counts])).toEqual(want.tables.map((x) => [...x.counts]));
    got.tables.forEach((x, i) => {
      const w = want.tables[i]!.grads;
      x.grads.forEach((g, k) => expect(g).toBeCloseTo(w[k]!, 6));
    });
    // the case it is about: one low word under two high words, both rows kept
    const rows = [...got.tables[0]!.keys].flatMap((v, k, all) => (k % 2 ? [] : [[v, all[k + 1]]]));
    const lows = rows.map((r) => r[0]);
    expect(new Set(lows).size).toBeLessThan(rows.length);
  });

  it('applies the pushes of a step as one Adam step on their sum, once, and replays it the same', async () => {
    const cluster = uniqueName('sync');
    const s = subjects(cluster);
    const shard = new Shard(
      {
        cluster,
        shard: 0,
        shards: 1,
        nats: { servers: nats.url },
        model,
        dataDir,
        checkpointIntervalMs: 0,
        limits: { syncStepTimeoutMs: STEP_TIMEOUT_MS },
      },
      { nc: nats.nc, log: () => undefined },
    );
    await shard.start();
    const reference = inProcessCore(spec);
    const push = async (req: PushRequest): Promise<PushReply> =>
      decodePushReply(await requestBytes(nats.nc, s.push(0), encodePush(req), { timeoutMs: 5000 }));
    try {
      for (let step = 0; step < 4; step++) {
        const a = workerPush(0, step, step, 32);
        const b = workerPush(1, step, step, 20 + step);
        const t0 = performance.now();
        // b after a: the step must wait for it (after the first step, both are members)
        const ra = push(a);
        await new Promise((res) => setTimeout(res, 50));
        const rb = push(b);
        const [ya, yb] = await Promise.all([ra, rb]);
        const ms = performance.now() - t0;
        expect(ya).toMatchObject({ version: step + 1, duplicate: false });
        expect(yb).toMatchObject({ version: step + 1, duplicate: false });
        // the first step waits the timeout for its members; later ones close when both are in
        if (step > 0) expect(ms).toBeLessThan(STEP_TIMEOUT_MS);
        reference.applyPush(singleLearnerPush([a, b], `one${step}`), Date.now());
      }
      expect(shard.core.version).toBe(4);
      const want = stateOf(reference);
      const got = stateOf(shard.core);
      expect(got.steps).toEqual(want.steps);
      expect(got.rows.size).toBe(want.rows.size);
      for (const [k, words] of want.rows) expect(got.rows.get(k), k).toEqual(words);

      // a retried push of an applied step: duplicate, nothing applied
      const again = await push(workerPush(1, 3, 3, 23));
      expect(again).toMatchObject({ duplicate: true, version: 4, applied: 0 });
      expect(shard.core.version).toBe(4);
      expect(shard.status().sync).toEqual({ steps: 4, pushes: 8, timeouts: 0, members: 2 });

      // a retry while its step is open waits for the step and is answered duplicate
      const a4 = workerPush(0, 4, 4, 32);
      const first = push(a4);
      await new Promise((res) => setTimeout(res, 30));
      const retry = push(a4);
      await new Promise((res) => setTimeout(res, 30));
      const b4 = workerPush(1, 4, 4, 24);
      const [y1, y2, y3] = await Promise.all([first, retry, push(b4)]);
      expect(y1).toMatchObject({ version: 5, duplicate: false });
      expect(y2).toMatchObject({ version: 5, duplicate: true });
      expect(y3).toMatchObject({ version: 5, duplicate: false });
      reference.applyPush(singleLearnerPush([a4, b4], 'one4'), Date.now());

      // a member that does not push: the step closes at the timeout with what arrived, counted
      const a5 = workerPush(0, 5, 5, 32);
      const t5 = performance.now();
      expect(await push(a5)).toMatchObject({ version: 6, duplicate: false });
      expect(performance.now() - t5).toBeGreaterThanOrEqual(STEP_TIMEOUT_MS - 5);
      reference.applyPush(singleLearnerPush([a5], 'one5'), Date.now());
      expect(shard.status().sync).toMatchObject({ steps: 6, timeouts: 1, members: 1 });

      const before = stateOf(shard.core);
      for (const [k, words] of stateOf(reference).rows) expect(before.rows.get(k), k).toEqual(words);
      // the log holds each step as one record: a replay rebuilds the same state
      const info = await shard.reload();
      expect(info.replayedRecords).toBeGreaterThanOrEqual(6);
      expect(shard.core.version).toBe(6);
      const after = stateOf(shard.core);
      expect(after.steps).toEqual(before.steps);
      for (const [k, words] of before.rows) expect(after.rows.get(k), k).toEqual(words);
      // and the ids of every part are remembered after the replay
      expect(await push(workerPush(1, 2, 2, 22))).toMatchObject({ duplicate: true, version: 3 });
      expect(shard.core.version).toBe(6);
    } finally {
      await shard.stop();
    }
  });
});
