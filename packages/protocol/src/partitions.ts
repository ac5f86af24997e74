import { FreshetError } from './errors.js';
import { hashString64, jumpHash } from './keys.js';

const scratch = new Uint32Array(2);

/**
 * The feedback partition of a user: a stable hash, the same in every process and language that
 * reimplements it (FNV-1a + murmur3 finaliser of the UTF-8 user id, then jump consistent hash).
 * All of one user's events land on one partition, so they stay in order for the joiner.
 */
export function partitionOf(user: string, partitions: number): number {
  if (!Number.isInteger(partitions) || partitions < 1 || partitions > 65_536) {
    throw new FreshetError('CONFIG', `partitions must be an integer in [1, 65536], got ${partitions}`);
  }
  if (partitions === 1) return 0;
  hashString64(user, scratch);
  return jumpHash(scratch[0]!, partitions);
}
