import { endianness } from 'node:os';
import { denseTensors, FreshetError, splitTensor, type ModelSpec } from '@freshet/protocol';

/**
 * The warm-start file (docs/warm-start.md): a safetensors file — an 8-byte little-endian header
 * length, a JSON header `{name: {dtype, shape, data_offsets}}`, then the raw little-endian
 * tensors — that any batch trainer can write without a Freshet library. A dense table is one F32
 * tensor named after the table (any shape holding its dim floats; a partitioned tensor either whole,
 * under its own name, or as its parts' tables); an embedding table `T` is
 * `T.keys`, U32 [n, 2] (each row's 64-bit feature id as lo, hi: `featureId(field, value)` of
 * @freshet/protocol), and `T.values`, F32 [n, dim]. `__metadata__` may name the format
 * (`freshet.format: warm-start/1`) and the model.
 */

export const warmStartFormat = 'warm-start/1';

/** One table's rows as the file holds them. */
export type WarmStartTable =
  | { kind: 'dense'; values: Float32Array }
  | { kind: 'sparse'; dim: number; keys: Uint32Array; values: Float32Array };

export interface WarmStartFile {
  tables: Map<string, WarmStartTable>;
  metadata: Record<string, string>;
}

interface TensorInfo {
  dtype: string;
  shape: number[];
  data_offsets: [number, number];
}

const MAX_HEADER = 100 << 20;

function bad(msg: string): never {
  throw new FreshetError('CONFIG', `warm-start file: ${msg}`, { retryable: false });
}

function checkHost(): void {
  // typed arrays read the host's byte order; safetensors is little-endian
  if (endianness() !== 'LE') bad('this host is big-endian; the format is little-endian');
}

/** Writes a warm-start file (tables in name order, 8-byte aligned tensors). */
export function encodeWarmStart(file: WarmStartFile): Uint8Array {
  checkHost();
  const header: Record<string, unknown> = {
    __metadata__: { 'freshet.format': warmStartFormat, ...file.metadata },
  };
  const blobs: Uint8Array[] = [];
  let offset = 0;
  const put = (name: string, dtype: string, shape: number[], a: Float32Array | Uint32Array) => {
    const bytes = new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
    header[name] = { dtype, shape, data_offsets: [offset, offset + bytes.length] };
    blobs.push(bytes);
    offset += bytes.length;
  };
  for (const name of [...file.tables.keys()].sort()) {
    const t = file.tables.get(name)!;
    if (t.kind === 'dense') put(name, 'F32', [t.values.length], t.values);
    else {
      const n = t.keys.length / 2;
      put(`${name}.keys`, 'U32', [n, 2], t.keys);
      put(`${name}.values`, 'F32', [n, t.dim], t.values);
    }
  }
  let json = JSON.stringify(header);
  // the data section starts 8-byte aligned (pad the header with spaces, as safetensors does)
  json += ' '.repeat((8 - ((8 + Buffer.byteLength(json)) % 8)) % 8);
  const head = Buffer.from(json, 'utf8');
  const out = new Uint8Array(8 + head.length + offset);
  new DataView(out.buffer).setBigUint64(0, BigInt(head.length), true);
  out.set(head, 8);
  let at = 8 + head.length;
  for (const b of blobs) {
    out.set(b, at);
    at += b.length;
  }
  return out;
}

/** Reads a warm-start file; throws CONFIG naming what is malformed. */
export function decodeWarmStart(bytes: Uint8Array): WarmStartFile {
  checkHost();
  if (bytes.length < 8) bad(`${bytes.length} bytes: too short for a safetensors header`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const len = Number(view.getBigUint64(0, true));
  if (len > MAX_HEADER || 8 + len > bytes.length) bad(`header length ${len} does not fit the file`);
  let header: Record<string, unknown>;
  try {
    header = JSON.parse(Buffer.from(bytes.subarray(8, 8 + len)).toString('utf8')) as Record<string, unknown>;
  } catch (e) {
    bad(`header is not JSON: ${(e as Error).message}`);
  }
  if (typeof header !== 'object' || header === null || Array.isArray(header)) bad('header is not an object');
  const data = bytes.subarray(8 + len);
  const metadata: Record<string, string> = {};
  const tensors = new Map<string, { info: TensorInfo; bytes: Uint8Array }>();
  for (const [name, v] of Object.entries(header)) {
    if (name === '__metadata__') {
      for (const [k, x] of Object.entries((v ?? {}) as Record<string, unknown>))
        if (typeof x === 'string') metadata[k] = x;
      continue;
    }
    const info = v as TensorInfo;
    const [from, to] = Array.isArray(info?.data_offsets) ? info.data_offsets : [NaN, NaN];
    if (!Array.isArray(info.shape) || !info.shape.every((d) => Number.isInteger(d) && d >= 0))
      bad(`tensor ${name}: bad shape`);
    if (!(Number.isInteger(from) && Number.isInteger(to) && from >= 0 && from <= to && to <= data.length))
      bad(`tensor ${name}: data_offsets [${from}, ${to}] outside the ${data.length}-byte data section`);
    const elems = info.shape.reduce((a, b) => a * b, 1);
    if (info.dtype !== 'F32' && info.dtype !== 'U32')
      bad(`tensor ${name}: dtype ${info.dtype}; embedding keys are U32, values F32`);
    if (to - from !== elems * 4)
      bad(`tensor ${name}: ${to - from} bytes for shape [${info.shape.join(', ')}] of ${info.dtype}`);
    tensors.set(name, { info, bytes: data.subarray(from, to) });
  }
  // copies: the tensors need not be 4-byte aligned in the file buffer
  const f32 = (b: Uint8Array) => new Float32Array(b.slice().buffer);
  const u32 = (b: Uint8Array) => new Uint32Array(b.slice().buffer);
  const tables = new Map<string, WarmStartTable>();
  for (const [name, t] of tensors) {
    if (name.endsWith('.values') && tensors.has(name.slice(0, -7) + '.keys')) continue;
    if (name.endsWith('.keys')) {
      const base = name.slice(0, -5);
      const values = tensors.get(`${base}.values`);
      if (!values) bad(`tensor ${name} has no ${base}.values`);
      if (t.info.dtype !== 'U32' || t.info.shape.length !== 2 || t.info.shape[1] !== 2)
        bad(`tensor ${name}: keys are U32 [n, 2] (lo, hi), got ${t.info.dtype} [${t.info.shape.join(', ')}]`);
      const n = t.info.shape[0]!;
      const vs = values.info.shape;
      if (values.info.dtype !== 'F32' || vs.length !== 2 || vs[0] !== n)
        bad(`tensor ${base}.values: F32 [${n}, dim] expected, got ${values.info.dtype} [${vs.join(', ')}]`);
      tables.set(base, { kind: 'sparse', dim: vs[1]!, keys: u32(t.bytes), values: f32(values.bytes) });
      continue;
    }
    if (t.info.dtype !== 'F32') bad(`tensor ${name}: a dense table is F32, got ${t.info.dtype}`);
    tables.set(name, { kind: 'dense', values: f32(t.bytes) });
  }
  return { tables, metadata };
}

/** One table of the file resolved against the cluster's spec. */
export interface ResolvedTable {
  t: number;
  name: string;
  table: WarmStartTable;
}

/**
 * Matches a file to the cluster's model spec: every file table must exist with the same kind
 * and dim, hold only finite values and no key twice; FTRL tables are refused (their weights
 * follow z and n). Spec tables the file lacks are an error unless `allowMissing`. Throws one
 * CONFIG error listing every problem.
 */
export function resolveWarmStart(
  file: WarmStartFile,
  spec: ModelSpec,
  allowMissing = false,
): { tables: ResolvedTable[]; missing: string[] } {
  const problems: string[] = [];
  const tables: ResolvedTable[] = [];
  const byName = new Map(spec.tables.map((t, i) => [t.name, i]));
  for (const [name, table] of partsOf(file.tables, spec, problems)) {
    const t = byName.get(name);
    if (t === undefined) {
      problems.push(
        `table "${name}" is not in model "${spec.name}" (tables: ${[...byName.keys()].join(', ')})`,
      );
      continue;
    }
    const s = spec.tables[t]!;
    const kind = s.kind === 'dense' ? 'dense' : 'embedding';
    if ((table.kind === 'dense') !== (s.kind === 'dense')) {
      problems.push(
        `table "${name}" is ${kind} in the model, ${table.kind === 'dense' ? 'dense' : 'embedding'} in the file`,
      );
      continue;
    }
    if (table.kind === 'dense' && table.values.length !== s.dim)
      problems.push(`table "${name}": ${table.values.length} floats in the file, dim ${s.dim} in the model`);
    if (table.kind === 'sparse' && table.dim !== s.dim)
      problems.push(`table "${name}": rows of dim ${table.dim} in the file, ${s.dim} in the model`);
    if (s.optimizer.kind === 'ftrl')
      problems.push(
        `table "${name}" trains with FTRL, whose weights follow z and n: it cannot be warm-started`,
      );
    if (!table.values.every((x) => Number.isFinite(x))) problems.push(`table "${name}": non-finite values`);
    if (table.kind === 'sparse') {
      const seen = new Set<bigint>();
      for (let i = 0; i < table.keys.length; i += 2) {
        const k = (BigInt(table.keys[i + 1]!) << 32n) | BigInt(table.keys[i]!);
        if (seen.has(k)) {
          problems.push(`table "${name}": key (${table.keys[i]}, ${table.keys[i + 1]}) twice`);
          break;
        }
        seen.add(k);
      }
    }
    tables.push({ t, name, table });
  }
  const given = new Set(file.tables.keys());
  const missing = spec.tables
    .filter((s) => !given.has(s.name) && !(s.part && given.has(s.part.of)))
    .map((s) => s.part?.of ?? s.name)
    .filter((n, i, all) => all.indexOf(n) === i);
  if (missing.length > 0 && !allowMissing)
    problems.push(
      `model tables missing from the file: ${missing.join(', ')} (--allow-missing imports the rest)`,
    );
  if (problems.length > 0)
    throw new FreshetError('CONFIG', `warm-start file does not match the model: ${problems.join('; ')}`, {
      retryable: false,
    });
  return { tables: tables.sort((a, b) => a.t - b.t), missing };
}

/**
 * The file's tables with each whole tensor of a partitioned one (`mlp.0.w` where the model has
 * `mlp.0.w.part0`, …: what a batch trainer writes) cut into its parts, by part name.
 */
function partsOf(
  tables: Map<string, WarmStartTable>,
  spec: ModelSpec,
  problems: string[],
): Map<string, WarmStartTable> {
  const out = new Map(tables);
  for (const d of denseTensors(spec)) {
    const whole = d.tables.length > 1 ? tables.get(d.name) : undefined;
    if (!whole) continue;
    out.delete(d.name);
    if (whole.kind !== 'dense' || whole.values.length !== d.size) {
      problems.push(
        `tensor "${d.name}": ${whole.values.length} floats in the file, ${d.size} in the model (dense)`,
      );
      continue;
    }
    for (const [t, values] of splitTensor(d, whole.values))
      out.set(spec.tables[t]!.name, { kind: 'dense', values });
  }
  return out;
}
