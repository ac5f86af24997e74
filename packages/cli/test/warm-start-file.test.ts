import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { featureId, parseModelSpec } from '@freshet/protocol';
import { useTempDirs, writeCriteoFixture } from '@freshet/testkit';
import {
  decodeWarmStart,
  encodeWarmStart,
  resolveWarmStart,
  type WarmStartFile,
} from '../src/warm-start-file.js';
import { runWarmStartBench } from '../src/warm-start-bench.js';
import { repoRoot } from '../src/cli-args.js';

const tempDir = useTempDirs();

const spec = parseModelSpec({
  name: 'ws',
  tables: [
    { name: 'wide', kind: 'sparse', dim: 1 },
    { name: 'emb', kind: 'sparse', dim: 3 },
    { name: 'lin', kind: 'dense', dim: 2 },
  ],
});
const keys = Uint32Array.of(1, 2, 3, 4);
const file = (): WarmStartFile => ({
  tables: new Map([
    ['wide', { kind: 'sparse', dim: 1, keys, values: Float32Array.of(0.5, -0.5) }],
    ['emb', { kind: 'sparse', dim: 3, keys, values: Float32Array.of(1, 2, 3, -0, 1e-30, 7) }],
    ['lin', { kind: 'dense', values: Float32Array.of(0.25, -1) }],
  ]),
  metadata: { trainer: 'test' },
});

describe('warm-start files', () => {
  it('round-trip as safetensors: header, offsets, 8-byte aligned data', () => {
    const bytes = encodeWarmStart(file());
    const len = Number(new DataView(bytes.buffer).getBigUint64(0, true));
    expect((8 + len) % 8).toBe(0);
    const header = JSON.parse(Buffer.from(bytes.subarray(8, 8 + len)).toString()) as Record<string, unknown>;
    expect(header['emb.keys']).toEqual({ dtype: 'U32', shape: [2, 2], data_offsets: expect.any(Array) });
    expect(header['emb.values']).toMatchObject({ dtype: 'F32', shape: [2, 3] });
    expect(header.__metadata__).toEqual({ 'freshet.format': 'warm-start/1', trainer: 'test' });
    const back = decodeWarmStart(bytes);
    expect(back.metadata.trainer).toBe('test');
    for (const [name, t] of file().tables) {
      const b = back.tables.get(name)!;
      expect(b.kind).toBe(t.kind);
      expect(Array.from(new Uint32Array(b.values.buffer))).toEqual(
        Array.from(new Uint32Array(t.values.buffer)),
      );
      if (t.kind === 'sparse' && b.kind === 'sparse') expect(Array.from(b.keys)).toEqual(Array.from(t.keys));
    }
  });

  it('refuses malformed files with what is wrong', () => {
    expect(() => decodeWarmStart(new Uint8Array(3))).toThrow(/too short/);
    const bytes = encodeWarmStart(file());
    expect(() => decodeWarmStart(bytes.subarray(0, bytes.length - 4))).toThrow(/outside the .*data section/);
    const json = (h: object) => {
      const head = Buffer.from(JSON.stringify(h));
      const out = new Uint8Array(8 + head.length + 8);
      new DataView(out.buffer).setBigUint64(0, BigInt(head.length), true);
      out.set(head, 8);
      return out;
    };
    expect(() => decodeWarmStart(json({ lin: { dtype: 'F64', shape: [1], data_offsets: [0, 8] } }))).toThrow(
      /dtype F64/,
    );
    expect(() =>
      decodeWarmStart(json({ 'emb.keys': { dtype: 'U32', shape: [1, 2], data_offsets: [0, 8] } })),
    ).toThrow(/has no emb.values/);
  });

  it('matches a file against the model, listing every problem', () => {
    expect(resolveWarmStart(file(), spec).tables.map((t) => t.name)).toEqual(['wide', 'emb', 'lin']);
    const f = file();
    f.tables.set('emb', { kind: 'sparse', dim: 2, keys, values: new Float32Array(4) });
    f.tables.set('lin', { kind: 'dense', values: new Float32Array(3) });
    f.tables.set('mlp', { kind: 'dense', values: new Float32Array(1) });
    f.tables.set('wide', {
      kind: 'sparse',
      dim: 1,
      keys: Uint32Array.of(1, 2, 1, 2),
      values: new Float32Array(2),
    });
    let msg = '';
    try {
      resolveWarmStart(f, spec);
    } catch (e) {
      msg = (e as Error).message;
      expect((e as { code?: string }).code).toBe('CONFIG');
    }
    expect(msg).toMatch(/table "emb": rows of dim 2 in the file, 3 in the model/);
    expect(msg).toMatch(/table "lin": 3 floats in the file, dim 2/);
    expect(msg).toMatch(/table "mlp" is not in model "ws"/);
    expect(msg).toMatch(/table "wide": key \(1, 2\) twice/);
    const partial = file();
    partial.tables.delete('emb');
    expect(() => resolveWarmStart(partial, spec)).toThrow(/missing from the file: emb/);
    expect(resolveWarmStart(partial, spec, true).missing).toEqual(['emb']);
    const ftrl = parseModelSpec({
      name: 'f',
      tables: [{ name: 'wide', kind: 'sparse', dim: 1, optimizer: { kind: 'ftrl' } }],
    });
    const w = file();
    w.tables = new Map([['wide', w.tables.get('wide')!]]);
    expect(() => resolveWarmStart(w, ftrl)).toThrow(/FTRL/);
  });

  it('cuts a whole tensor of a partitioned one into its parts', () => {
    const parted = parseModelSpec({
      name: 'p',
      tables: [
        { name: 'emb', kind: 'sparse', dim: 3 },
        { name: 'w.part0', kind: 'dense', dim: 4, part: { of: 'w', index: 0, count: 2, offset: 0 } },
        { name: 'w.part1', kind: 'dense', dim: 2, part: { of: 'w', index: 1, count: 2, offset: 4 } },
      ],
    });
    const whole = Float32Array.of(1, 2, 3, 4, 5, 6);
    const f: WarmStartFile = { tables: new Map([['w', { kind: 'dense', values: whole }]]), metadata: {} };
    const r = resolveWarmStart(f, parted, true);
    expect(r.tables.map((t) => [t.name, Array.from(t.table.values)])).toEqual([
      ['w.part0', [1, 2, 3, 4]],
      ['w.part1', [5, 6]],
    ]);
    expect(r.missing).toEqual(['emb']);
    // the parts themselves import too; a part missing is named by its tensor
    const byParts: WarmStartFile = {
      tables: new Map([['w.part1', { kind: 'dense', values: Float32Array.of(5, 6) }]]),
      metadata: {},
    };
    expect(resolveWarmStart(byParts, parted, true).missing).toEqual(['emb', 'w']);
    f.tables.set('w', { kind: 'dense', values: new Float32Array(5) });
    expect(() => resolveWarmStart(f, parted, true)).toThrow(
      /tensor "w": 5 floats in the file, 6 in the model/,
    );
  });

  it("bench/peers/freshet_keys.py names rows as Freshet's featureId does", () => {
    const python = [process.env.FRESHET_PYTHON, '/usr/bin/python3', 'python3'].find(
      (p) => p !== undefined && (!p.startsWith('/') || existsSync(p)),
    )!;
    const pairs = [
      ['C1', '68fd1e64'],
      ['C22', ''],
      ['user', 'u42'],
      ['query', 'été 😀'],
      ['item', 'x\u0001y'],
    ];
    const out = execFileSync(python, [join(repoRoot(), 'bench', 'peers', 'freshet_keys.py')], {
      input: JSON.stringify(pairs),
    });
    const ts = pairs.map(([f, v]) => {
      const k = new Uint32Array(2);
      featureId(f!, v!, k);
      return [k[0], k[1]];
    });
    expect(JSON.parse(out.toString())).toEqual(ts);
  });

  it('bench warm: the batch model imported, then online, next to frozen and cold on the tail', async () => {
    const fx = writeCriteoFixture(tempDir('warm-bench'), { rows: 1200, seed: 3 });
    const r = await runWarmStartBench({
      data: `criteo:${fx.path}`,
      model: 'fm',
      epochs: 1,
      batch: 64,
      lr: 0.01,
      dim: 4,
      seed: 0,
      threads: 1,
      trainer: 'freshet',
      warmLrScale: 0.5,
    });
    expect(r).toMatchObject({ bench: 'warm', head: 600, tail: 600, batch_trainer: { trainer: 'freshet' } });
    expect((r.import as { differing: number }).differing).toBe(0);
    const m = r.tail_progressive as Record<string, { auc: number; logloss: number }>;
    for (const k of ['frozen', 'cold', 'warm', 'warm_lower_lr', 'online_all_along'])
      expect(m[k]!.auc).toBeGreaterThan(0.5);
    // the imported model knows the head: it starts where the cold model has yet to get
    expect(m.warm!.logloss).toBeLessThan(m.cold!.logloss);
  }, 120_000);
});
