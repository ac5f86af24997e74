import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import {
  categoricalValue,
  compileModelConfig,
  valueId,
  type DenseParam,
  type Example,
  type ModelConfigInput,
} from '@freshet/model';
import { initRow, joinTensor } from '@freshet/protocol';

/**
 * Freshet's initial weights for the Criteo PyTorch peer (`bench/peers/torch_online.py`), so both
 * sides of a quality comparison start from the same point. Without it the two initialise from
 * different random streams, and the seed-to-seed spread of progressive AUC on 10k Criteo
 * examples (±0.009) hides any difference the training itself makes: common initial weights turn
 * "ahead on average over 12 seeds" into a per-run comparison.
 *
 * Written as three files in `dir` (read by `bench/peers/freshet_init.py`, which has no
 * dependencies):
 *   - `init.json`: {"emb_dim", "rows", "mlp": [{"in", "out", "w", "b"}]}, `w` the [in, out]
 *     row-major float32 weights and `b` the bias, little-endian, base64;
 *   - `init.keys`: one categorical `field\tvalue` per line (Criteo's values hold no tab or newline);
 *   - `init.rows`: the matching embedding rows, `rows` × `emb_dim` little-endian float32.
 * The peer puts each row where its own hashing (crc32 of "C<k>:<value>") puts that value; the
 * wide table is zeros on both sides and is not written.
 */

/** Why the peer cannot take Freshet's initial weights for this model, or undefined when it can. */
export function peerInitGap(config: ModelConfigInput): string | undefined {
  const { layout, config: c } = compileModelConfig(config);
  if (layout.kind !== 'wide-deep') return `the peer is a wide&deep, the model is ${layout.kind}`;
  if (c.embeddingDim !== 16 || c.hidden.join(',') !== '128,64')
    return 'the peer has dim-16 embeddings and a 128-64 MLP';
  const { numeric, sparse } = layout.features;
  if (numeric.length !== 13 || sparse.length !== 26 || sparse.some((f) => f.kind !== 'categorical'))
    return 'the peer takes 13 numeric and 26 categorical Criteo fields';
  return undefined;
}

const b64 = (a: Float32Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength).toString('base64');

/**
 * Writes the initial embedding rows of every categorical value in `examples` and the initial MLP
 * of `config` (as a fresh cluster's shards would create them: `initRow` of each table's init)
 * into `dir`. Returns the number of rows written.
 */
export async function writePeerInit(
  config: ModelConfigInput,
  examples: readonly Example[],
  dir: string,
): Promise<number> {
  const gap = peerInitGap(config);
  if (gap) throw new Error(`no shared initial weights: ${gap}`);
  const { spec, layout } = compileModelConfig(config);
  const emb = spec.tables[layout.emb!]!;
  const dim = emb.dim;
  const fields = layout.features.sparse.map((f) => f.name);
  const empty = new Set(
    layout.features.spec.fields
      .filter((f) => f.kind === 'categorical' && f.emptyAsMissing)
      .map((f) => f.name),
  );
  // The encoder's ids: values sharing a bucket share their initial row, as in the peer.
  const buckets = layout.features.spec.hashBuckets;
  const seen = new Set<string>();
  const keys: string[] = [];
  const id = new Uint32Array(2);
  let rows = new Float32Array(1024 * dim);
  for (const ex of examples) {
    for (const field of fields) {
      // the value as the encoder hashes it
      const value = categoricalValue(ex.features[field], empty.has(field));
      if (value === undefined) continue;
      const key = `${field}\t${value}`;
      if (seen.has(key)) continue;
      seen.add(key);
      if ((keys.length + 1) * dim > rows.length) {
        const grown = new Float32Array(rows.length * 2);
        grown.set(rows);
        rows = grown;
      }
      valueId(buckets, field, value, id);
      initRow(emb.init, id[0]!, id[1]!, rows, keys.length * dim, dim);
      keys.push(key);
    }
  }
  const mlp = layout.mlp.map((l) => {
    const part = (t: number) => {
      const out = new Float32Array(spec.tables[t]!.dim);
      initRow(spec.tables[t]!.init, 0, 0, out, 0, out.length);
      return out;
    };
    const tensor = (d: DenseParam) => b64(joinTensor(d, part));
    return { in: l.in, out: l.out, w: tensor(l.w), b: tensor(l.b) };
  });
  await writeFile(join(dir, 'init.json'), JSON.stringify({ emb_dim: dim, rows: keys.length, mlp }));
  await writeFile(join(dir, 'init.keys'), keys.length ? keys.join('\n') + '\n' : '');
  await writeFile(join(dir, 'init.rows'), rows.subarray(0, keys.length * dim));
  return keys.length;
}
