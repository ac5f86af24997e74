/**
 * Deterministic pseudo-random numbers in [0, 1) (xorshift32) for benchmarks' synthetic data:
 * the same seed gives the same sequence in every process and language port.
 */
export function xorshift32(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return (s >>> 0) / 4294967296;
  };
}
