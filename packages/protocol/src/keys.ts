/**
 * 64-bit feature ids and their routing to shards.
 *
 * An id is a pair of u32 (lo, hi), stored interleaved in Uint32Arrays ([lo0, hi0, lo1, hi1...]):
 * no BigInt or object per key on hot paths. Ids are collisionless in practice (64 bits), unlike a
 * modulo-table hash (e.g. 2^20 rows).
 */

const te = new TextEncoder();

/** FNV-1a over bytes with a seed, then a murmur3 finaliser for avalanche. */
function hash32(bytes: Uint8Array, seed: number): number {
  let h = (0x811c9dc5 ^ seed) >>> 0;
  for (let i = 0; i < bytes.length; i++) {
    h ^= bytes[i]!;
    h = Math.imul(h, 0x01000193);
  }
  return fmix32(h);
}

/** murmur3 32-bit finaliser. */
export function fmix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** A 64-bit id for a string; two independent 32-bit hashes. */
export function hashString64(s: string, out: Uint32Array, at = 0): void {
  const bytes = te.encode(s);
  out[at] = hash32(bytes, 0x9747b28c);
  out[at + 1] = hash32(bytes, 0x5bd1e995);
}

/** The id of a categorical value, salted by its field so equal values in two fields differ. */
export function featureId(field: string, value: string, out: Uint32Array, at = 0): void {
  hashString64(`${field}\u0001${value}`, out, at);
}

const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

/** CRC-32 (IEEE 802.3, zlib's and Python's `zlib.crc32`) of bytes. */
export function crc32(bytes: Uint8Array): number {
  let c = 0xffffffff;
  for (let i = 0; i < bytes.length; i++) c = CRC_TABLE[(c ^ bytes[i]!) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

/**
 * `hi` of every bucketed id: a fixed tag, so bucket 0 is not the dense tables' key (0, 0) and a
 * bucketed id never equals a 64-bit {@link featureId} by accident of small numbers.
 */
export const BUCKET_ID_HI = 0xb0c7e75d;

/**
 * The id of a categorical value in a bounded id space of `buckets` rows shared by every field:
 * bucket `crc32("<field>:<value>") mod buckets`, as DLRM-style models and the PyTorch wide&deep
 * peer hash (`zlib.crc32(f"C{k}:{value}") & (2**20 - 1)`). Values collide by design: memory is
 * bounded by `buckets` rows per table.
 */
export function bucketId(field: string, value: string, buckets: number, out: Uint32Array, at = 0): void {
  out[at] = crc32(te.encode(`${field}:${value}`)) % buckets;
  out[at + 1] = BUCKET_ID_HI;
}

/** A 32-bit digest of a 64-bit id, used for routing and for the shard's index probe. */
export function keyDigest(lo: number, hi: number): number {
  return fmix32((lo ^ Math.imul(hi, 0x9e3779b1)) >>> 0);
}

/**
 * Jump consistent hash (Lamping & Veach 2014) with a 32-bit generator: moving from n to n+1
 * shards relocates only 1/(n+1) of the keys, so the shard map can be rebalanced later.
 */
export function jumpHash(key32: number, buckets: number): number {
  let k = key32 >>> 0 || 1;
  let b = -1;
  let j = 0;
  while (j < buckets) {
    b = j;
    k = (Math.imul(k, 1664525) + 1013904223) >>> 0;
    j = Math.floor(((b + 1) * 16777216) / ((k >>> 8) + 1));
  }
  return b;
}

/** The shard that owns a sparse key of a table. The only routing function in Freshet. */
export function shardOfKey(table: number, lo: number, hi: number, shards: number): number {
  return jumpHash(keyDigest(lo, (hi ^ Math.imul(table + 1, 0x27d4eb2f)) >>> 0), shards);
}

/**
 * The shard that owns a dense table (one row): by the table's name, stable across spec edits.
 * The parts of a partitioned tensor go to consecutive shards from the one its name picks, so
 * `count` parts land on min(count, shards) shards, evenly (a hash per part would pile several
 * on some shards and leave others without).
 */
export function shardOfDense(
  table: { name: string; part?: { of: string; index: number } },
  shards: number,
): number {
  const out = new Uint32Array(2);
  hashString64(table.part ? table.part.of : table.name, out);
  const first = jumpHash(out[0]!, shards);
  return table.part ? (first + table.part.index) % shards : first;
}
