import { hashString64 } from '@freshet/protocol';

const scratch = new Uint32Array(2);

/**
 * A user's fixed point in [0, 1): the high word of the 64-bit string hash every Freshet role uses
 * (FNV-1a over UTF-8, murmur3 finaliser) of `salt \u0001 user`. The same user lands on the same
 * point in every process and after every restart; the salt (the live cluster's name) keeps the
 * split independent of the stream's partitioning.
 */
export function userPoint(user: string, salt: string): number {
  hashString64(`${salt}\u0001${user}`, scratch);
  return scratch[1]! / 2 ** 32;
}

/**
 * Which canary serves this user: variant i takes the users whose point falls in
 * [f0 + … + f(i−1), f0 + … + fi); −1 (the live model) for the rest. Fractions sum to at most 1.
 */
export function pickCanary(user: string, salt: string, fractions: readonly number[]): number {
  const x = userPoint(user, salt);
  let edge = 0;
  for (let i = 0; i < fractions.length; i++) {
    edge += fractions[i]!;
    if (x < edge) return i;
  }
  return -1;
}
