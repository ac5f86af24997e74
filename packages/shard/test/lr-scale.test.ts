import { describe, expect, it } from 'vitest';
import { useTempDirs } from '@freshet/testkit';
import { decodePush, encodePush, parseModelSpec, type PushRequest } from '@freshet/protocol';
import type { ShardCore } from '../src/shard-core.js';
import { inProcessCore } from './in-process-core.js';
import { replayWal, Wal } from '../src/wal.js';

const tempDir = useTempDirs();

const spec = parseModelSpec({
  name: 'm',
  tables: [
    { name: 'emb', dim: 2, optimizer: { kind: 'sgd', lr: 0.1 }, staleness: { policy: 'none' }, ttlMs: 0 },
    { name: 'adam', dim: 2, optimizer: { kind: 'adam', lr: 0.01 }, staleness: { policy: 'none' }, ttlMs: 0 },
  ],
});
const core = () => inProcessCore(spec);
const KEYS = [7, 1, 8, 1];
const push = (id: string, t: number, lrScale?: number): PushRequest => ({
  id,
  worker: 'w',
  clock: 0,
  base: 0,
  ...(lrScale === undefined ? {} : { lrScale }),
  tables: [
    {
      t,
      dim: 2,
      keys: Uint32Array.from(KEYS),
      grads: Float32Array.from([1, -2, 0.5, 3]),
      counts: Uint32Array.from([1, 1]),
    },
  ],
});
const read = (c: ShardCore, t: number) =>
  Array.from(c.pull({ tables: [{ t, keys: Uint32Array.from(KEYS) }] }).tables[0]!.values);

describe('push lrScale', () => {
  it('multiplies the table learning rate (SGD: the step scales exactly)', () => {
    const a = core();
    const b = core();
    const init = read(a, 0);
    a.applyPush(push('x', 0), 0);
    b.applyPush(push('x', 0, 0.25), 0);
    const stepA = read(a, 0).map((v, i) => v - init[i]!);
    const stepB = read(b, 0).map((v, i) => v - init[i]!);
    stepA.forEach((s, i) => {
      expect(s).not.toBe(0);
      expect(stepB[i]).toBeCloseTo(s * 0.25, 6);
    });
    // Adam's first step is ±lr per coordinate: the scaled one is a quarter of it
    a.applyPush(push('y', 1), 0);
    b.applyPush(push('y', 1, 0.25), 0);
    const init1 = core();
    const i1 = read(init1, 1);
    read(a, 1).forEach((v, i) => {
      const sb = read(b, 1)[i]! - i1[i]!;
      expect(sb).toBeCloseTo((v - i1[i]!) * 0.25, 6);
    });
  });

  it('is kept in the logged push frame, so a WAL replay reproduces the scaled update exactly', async () => {
    const dir = tempDir('lrscale');
    const live = core();
    const wal = await Wal.open(dir, false);
    for (const [i, s] of [0.5, 1, 0.125].entries()) {
      const frame = encodePush(push(`p${i}`, 0, s));
      const req = decodePush(frame);
      expect(req.lrScale ?? 1).toBe(s);
      const r = live.applyPush(req, 1000 + i);
      await wal.append({ kind: 'push', ts: 1000 + i, tau: r.tau, dcApplied: r.dcApplied, payload: frame });
    }
    await wal.close();
    const replayed = core();
    const scales: number[] = [];
    await replayWal(dir, 0, (rec) => {
      if (rec.kind !== 'push') return;
      const req = decodePush(rec.payload);
      scales.push(req.lrScale ?? 1);
      replayed.applyPush(req, rec.ts, { tau: rec.tau, dcApplied: rec.dcApplied });
    });
    expect(scales).toEqual([0.5, 1, 0.125]);
    expect(read(replayed, 0)).toEqual(read(live, 0));
    // and differs from a replay that ignored the scale
    const unscaled = core();
    for (let i = 0; i < 3; i++) unscaled.applyPush(push(`p${i}`, 0), 1000 + i);
    expect(read(unscaled, 0)).not.toEqual(read(live, 0));
  });
});
