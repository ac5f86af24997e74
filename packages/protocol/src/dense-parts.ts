/** What of a table spec (model-spec.ts) the parts are read from. */
interface TableShape {
  name: string;
  kind: 'sparse' | 'dense';
  dim: number;
  part?: { of: string; index: number; count: number; offset: number } | undefined;
}

/**
 * A model's dense tensor as the model sees it: one dense table, or the parts of a partitioned
 * tensor (tables whose spec names it in `part.of`), in order.
 */
export interface DenseTensor {
  name: string;
  /** Floats in the whole tensor. */
  size: number;
  /** Table ids of the parts, by part index (one id when the tensor is not partitioned). */
  tables: number[];
  /** Where each part starts in the tensor. */
  offsets: number[];
}

/**
 * The model's dense tensors, in order of their first table, after checking that every
 * partitioned tensor's parts are all there, dense, and tile it end to end: a spec that
 * fails this is refused (`Error`), since every process reassembles the tensor the same way.
 */
export function denseTensors(spec: { tables: readonly TableShape[] }): DenseTensor[] {
  const out: DenseTensor[] = [];
  const partitioned = new Map<string, { t: TableShape; id: number }[]>();
  const names = new Set(spec.tables.map((t) => t.name));
  spec.tables.forEach((t, id) => {
    if (!t.part) {
      if (t.kind === 'dense') out.push({ name: t.name, size: t.dim, tables: [id], offsets: [0] });
      return;
    }
    if (t.kind !== 'dense')
      throw new Error(`table "${t.name}": only a dense table can be a part of a tensor`);
    if (names.has(t.part.of)) throw new Error(`table "${t.name}": its tensor "${t.part.of}" is also a table`);
    const list = partitioned.get(t.part.of) ?? [];
    if (list.length === 0) {
      partitioned.set(t.part.of, list);
      out.push({ name: t.part.of, size: 0, tables: [], offsets: [] });
    }
    list.push({ t, id });
  });
  for (const d of out) {
    const list = partitioned.get(d.name);
    if (!list) continue;
    const count = list[0]!.t.part!.count;
    list.sort((a, b) => a.t.part!.index - b.t.part!.index);
    if (list.length !== count || list.some((p, i) => p.t.part!.index !== i || p.t.part!.count !== count)) {
      throw new Error(`tensor "${d.name}": needs parts 0..${count - 1} exactly once, has ${list.length}`);
    }
    for (const p of list) {
      if (p.t.part!.offset !== d.size) {
        throw new Error(
          `tensor "${d.name}": part ${p.t.part!.index} starts at ${p.t.part!.offset}, expected ${d.size}`,
        );
      }
      d.tables.push(p.id);
      d.offsets.push(d.size);
      d.size += p.t.dim;
    }
  }
  return out;
}

/** The whole tensor from its parts' values (the part itself when there is one). */
export function joinTensor(d: DenseTensor, part: (table: number) => Float32Array): Float32Array {
  if (d.tables.length === 1) return part(d.tables[0]!);
  const out = new Float32Array(d.size);
  d.tables.forEach((t, i) => out.set(part(t).subarray(0, d.size - d.offsets[i]!), d.offsets[i]!));
  return out;
}

/** Each part's floats of a whole tensor (views, not copies), by table id. */
export function splitTensor(d: DenseTensor, whole: Float32Array): Map<number, Float32Array> {
  if (whole.length !== d.size)
    throw new Error(`tensor "${d.name}": ${whole.length} floats, expected ${d.size}`);
  const out = new Map<number, Float32Array>();
  d.tables.forEach((t, i) => {
    const end = i + 1 < d.tables.length ? d.offsets[i + 1]! : d.size;
    out.set(t, whole.subarray(d.offsets[i]!, end));
  });
  return out;
}

/**
 * Splits a tensor of `size` floats into parts of at most `maxFloats` (even, so a part of a
 * normal-initialised tensor starts on a Box–Muller pair): [offset, dim] per part.
 */
export function partition(size: number, maxFloats: number): [number, number][] {
  const step = Math.max(2, maxFloats - (maxFloats % 2));
  const count = Math.ceil(size / step);
  // Equal parts (the last at most one float shorter per part) rather than full parts and a stub.
  const even = Math.ceil(size / count);
  const each = even + (even % 2);
  const out: [number, number][] = [];
  for (let at = 0; at < size; at += each) out.push([at, Math.min(each, size - at)]);
  return out;
}
