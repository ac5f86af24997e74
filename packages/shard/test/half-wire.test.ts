import { describe, expect, it } from 'vitest';
import {
  decodeDelta,
  decodePullReply,
  encodeDelta,
  encodePullReply,
  halfBits,
  halfValue,
  parseModelSpec,
} from '@freshet/protocol';
import { inProcessCore } from './in-process-core.js';

// A pull may ask for embedding rows as binary16, and a shard may publish them so in deltas. The
// shard keeps float32; only what travels is rounded, and never dense tensors or FTRL state (n
// passes 65504 on a busy row).

const spec = parseModelSpec({
  name: 'half',
  tables: [
    { name: 'emb', dim: 4, init: { kind: 'normal', std: 0.3, seed: 1 } },
    { name: 'mlp', kind: 'dense', dim: 6, init: { kind: 'normal', std: 0.3, seed: 2 } },
    {
      name: 'wide',
      dim: 1,
      optimizer: { kind: 'ftrl', alpha: 0.1, beta: 1, l1: 0, l2: 0, sequential: true },
    },
  ],
});
const keys = Uint32Array.of(1, 0, 2, 0, 3, 0);

/** A push of gradient 0.1 everywhere to the embedding rows (table 0) and/or the dense tensor (1). */
function pushUniform(core: ReturnType<typeof inProcessCore>, id: string, tables: ('emb' | 'mlp')[]) {
  core.applyPush(
    {
      id,
      worker: 'w',
      clock: 0,
      base: 0,
      tables: tables.map((which) =>
        which === 'emb'
          ? { t: 0, dim: 4, keys, grads: new Float32Array(12).fill(0.1), counts: Uint32Array.of(1, 1, 1) }
          : {
              t: 1,
              dim: 6,
              keys: new Uint32Array(2),
              grads: new Float32Array(6).fill(0.1),
              counts: Uint32Array.of(1),
            },
      ),
    },
    Date.now(),
  );
}

describe('half pulls', () => {
  it('round embedding rows to binary16 and leave dense tensors and FTRL state float32', () => {
    const core = inProcessCore(spec);
    const ask = (half: boolean, state = false) =>
      decodePullReply(
        encodePullReply(
          core.pull({
            half,
            state,
            tables: [
              { t: 0, keys },
              { t: 1, keys: new Uint32Array(2) },
              { t: 2, keys },
            ],
          }),
        ),
      );
    const full = ask(false);
    const half = ask(true);
    expect(full.tables[0]!.values.some((v) => halfValue(halfBits(v)) !== v)).toBe(true);
    expect(Array.from(half.tables[0]!.values)).toEqual(
      Array.from(full.tables[0]!.values).map((v) => halfValue(halfBits(v))),
    );
    expect(Array.from(half.tables[1]!.values)).toEqual(Array.from(full.tables[1]!.values));
    // FTRL's w, z, n with state: float32 whatever the request says
    const st = ask(true, true);
    expect(st.tables[2]!.dim).toBe(3);
    expect(Array.from(st.tables[2]!.values)).toEqual(Array.from(ask(false, true).tables[2]!.values));
  });
});

describe('half deltas', () => {
  it('carry embedding rows as binary16 in half the bytes, dense tensors as float32', () => {
    const deltaOf = (half: boolean) => {
      const core = inProcessCore(spec);
      pushUniform(core, 'p', ['emb', 'mlp']);
      const { tables } = core.takeDelta(1 << 20, half ? 'f16' : 'f32');
      return encodeDelta({ shard: 0, seq: 1, version: core.version, ts: 0, eventTs: [], tables });
    };
    const full = deltaOf(false);
    const half = deltaOf(true);
    expect(full.length - half.length).toBe(3 * 4 * 2);
    const f = decodeDelta(full);
    const h = decodeDelta(half);
    const emb = (d: typeof f) => d.tables.find((t) => t.t === 0)!;
    const mlp = (d: typeof f) => d.tables.find((t) => t.t === 1)!;
    expect(Array.from(emb(h).keys)).toEqual(Array.from(emb(f).keys));
    expect(Array.from(emb(h).values)).toEqual(Array.from(emb(f).values).map((v) => halfValue(halfBits(v))));
    expect(Array.from(mlp(h).values)).toEqual(Array.from(mlp(f).values));
  });
});

describe('int8 rows', () => {
  it('go as int8 in pulls and deltas where a row has 4+ values; narrower as binary16, dense as float32', () => {
    const core = inProcessCore(spec);
    const ask = (o: { half?: boolean; q8?: boolean; state?: boolean }) =>
      core.pull({
        ...o,
        tables: [
          { t: 0, keys },
          { t: 1, keys: new Uint32Array(2) },
          { t: 2, keys },
        ],
      });
    const full = ask({});
    const q = ask({ q8: true });
    expect(q.tables.map((t) => [t.q8 === true, t.half === true])).toEqual([
      [true, false], // emb, dim 4
      [false, false], // the dense tensor
      [false, true], // wide, dim 1: int8 plus a scale would cost more than binary16
    ]);
    const wire = decodePullReply(encodePullReply(q));
    const emb = full.tables[0]!.values;
    for (let r = 0; r < 3; r++) {
      const row = emb.subarray(r * 4, r * 4 + 4);
      const step = Math.max(...Array.from(row, Math.abs)) / 127;
      for (let j = 0; j < 4; j++)
        expect(Math.abs(wire.tables[0]!.values[r * 4 + j]! - row[j]!)).toBeLessThan(step);
    }
    expect(Array.from(wire.tables[1]!.values)).toEqual(Array.from(full.tables[1]!.values));
    // FTRL state stays float32 (w, z, n: 3 values, never int8)
    const st = ask({ q8: true, state: true });
    expect(st.tables[2]).toMatchObject({ dim: 3, q8: false, half: false });

    pushUniform(core, 'p', ['emb']);
    const { tables } = core.takeDelta(1 << 20, 'q8');
    expect(tables.find((t) => t.t === 0)).toMatchObject({ q8: true, half: false });
    const d = decodeDelta(
      encodeDelta({ shard: 0, seq: 1, version: core.version, ts: 0, eventTs: [], tables }),
    );
    const got = d.tables.find((t) => t.t === 0)!;
    expect(got.keys.length).toBe(6);
    // a delta lists rows in its own order: compare each with a float32 pull of its key
    const now = core.pull({ tables: [{ t: 0, keys: got.keys }] }).tables[0]!.values;
    for (let r = 0; r < 3; r++) {
      const step = Math.max(...Array.from(now.subarray(r * 4, r * 4 + 4), Math.abs)) / 127;
      for (let j = 0; j < 4; j++)
        expect(Math.abs(got.values[r * 4 + j]! - now[r * 4 + j]!)).toBeLessThan(step);
    }
  });
});

describe('int8 deltas', () => {
  it('carry dense tensors as binary16 (halfDeltas keeps them float32)', () => {
    const core = inProcessCore(spec);
    let n = 0;
    const dense = () => pushUniform(core, `d${n++}`, ['mlp']);
    const mlpOf = (enc: 'f16' | 'q8') => {
      dense();
      const { tables } = core.takeDelta(1 << 20, enc);
      return tables.find((t) => t.t === 1)!;
    };
    const f16 = mlpOf('f16');
    expect(f16).toMatchObject({ half: false, q8: false });
    const q = mlpOf('q8');
    expect(q).toMatchObject({ half: true, q8: false });
    const wire = decodeDelta(encodeDelta({ shard: 0, seq: 1, version: 1, ts: 0, eventTs: [], tables: [q] }));
    expect(Array.from(wire.tables[0]!.values)).toEqual(Array.from(q.values, (v) => halfValue(halfBits(v))));
  });
});
