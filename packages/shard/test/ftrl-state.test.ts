import { describe, expect, it } from 'vitest';
import {
  encodePull,
  decodePull,
  parseModelSpec,
  type FreshetError,
  type PushRequest,
} from '@freshet/protocol';
import { inProcessCore } from './in-process-core.js';

/**
 * Sequential FTRL: workers pull w, z, n and push what their examples added to z and n; the
 * shard adds the deltas and recomputes w by FTRL-Proximal's closed form.
 */
const ftrl = { kind: 'ftrl' as const, alpha: 0.1, beta: 1, l1: 0.2, l2: 0.5, sequential: true };
function core() {
  return inProcessCore(
    parseModelSpec({
      name: 'm',
      tables: [
        { name: 'wide', kind: 'sparse', dim: 1, optimizer: ftrl, staleness: { policy: 'none' } },
        { name: 'lin', kind: 'dense', dim: 3, optimizer: ftrl, staleness: { policy: 'none' } },
      ],
    }),
    { checkOwnership: false },
  );
}
let ids = 0;
function push(t: number, dim: number, keys: number[], d: number[], base = 0, lrScale?: number): PushRequest {
  return {
    id: `s${++ids}`,
    worker: 'w',
    clock: 0,
    base,
    ...(lrScale === undefined ? {} : { lrScale }),
    tables: [
      {
        t,
        dim,
        keys: Uint32Array.from(keys),
        grads: Float32Array.from(d),
        counts: new Uint32Array(keys.length / 2).fill(1),
      },
    ],
  };
}
const pull = (c: ReturnType<typeof core>, t: number, keys: number[], state: boolean) =>
  // through the wire format: the state flag must survive encoding
  c.pull(decodePull(encodePull({ state, tables: [{ t, keys: Uint32Array.from(keys) }] }))).tables[0]!;
const wOf = (z: number, n: number) =>
  Math.abs(z) <= ftrl.l1
    ? 0
    : -(z - Math.sign(z) * ftrl.l1) / ((ftrl.beta + Math.sqrt(n)) / ftrl.alpha + ftrl.l2);

describe('sequential FTRL state on the shard', () => {
  it('pulls w, z, n with state and w alone without; a push adds Δz, Δn and recomputes w', () => {
    const c = core();
    const fresh = pull(c, 0, [7, 0, 9, 0], true);
    expect(fresh.dim).toBe(3);
    expect(Array.from(fresh.values)).toEqual([0, 0, 0, 0, 0, 0]);
    c.applyPush(push(0, 2, [7, 0, 9, 0], [-0.5, 0.5, 1.5, 0.25]), 0);
    c.applyPush(push(0, 2, [7, 0], [-0.25, 0.5]), 0);
    const s = pull(c, 0, [7, 0, 9, 0], true);
    const z7 = -0.75;
    const n7 = 1;
    const z9 = 1.5;
    const n9 = 0.25;
    expect(s.values[0]).toBeCloseTo(wOf(z7, n7), 6);
    expect(s.values[1]).toBeCloseTo(z7, 6);
    expect(s.values[2]).toBeCloseTo(n7, 6);
    expect(s.values[3]).toBeCloseTo(wOf(z9, n9), 6);
    expect(s.values[4]).toBeCloseTo(z9, 6);
    expect(s.values[5]).toBeCloseTo(n9, 6);
    expect(wOf(z7, n7)).toBeGreaterThan(0); // the values are not trivially 0
    const plain = pull(c, 0, [7, 0, 9, 0], false);
    expect(plain.dim).toBe(1);
    expect(Array.from(plain.values)).toEqual([s.values[0], s.values[3]]);
  });

  it('dense tables take [Δz × dim][Δn × dim] too', () => {
    const c = core();
    c.applyPush(push(1, 6, [0, 0], [1, -1, 0, 4, 4, 0]), 0);
    const s = pull(c, 1, [0, 0], true);
    expect(s.values.length).toBe(9);
    expect(s.values[0]).toBeCloseTo(wOf(1, 4), 6);
    expect(s.values[1]).toBeCloseTo(wOf(-1, 4), 6);
    expect(s.values[2]).toBe(0);
    expect(Array.from(s.values.subarray(3))).toEqual([1, -1, 0, 4, 4, 0]);
  });

  it('refuses a push of gradient width (dim) for a state table', () => {
    const c = core();
    let code = 'none';
    try {
      c.applyPush(push(0, 1, [7, 0], [0.5]), 0);
    } catch (e) {
      code = (e as FreshetError).code;
    }
    expect(code).toBe('WRONG_LENGTH');
  });

  it('a push scaled by s (lrScale) adds s·Δz and s²·Δn, what gradients scaled by s would add', () => {
    const c = core();
    c.applyPush(push(0, 2, [3, 0], [-2, 4], 0, 0.5), 0);
    const s = pull(c, 0, [3, 0], true).values;
    expect(s[1]).toBeCloseTo(-1, 6);
    expect(s[2]).toBeCloseTo(1, 6);
    expect(s[0]).toBeCloseTo(wOf(-1, 1), 6);
  });
});
