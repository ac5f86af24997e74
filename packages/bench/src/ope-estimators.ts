import { FreshetError } from '@freshet/protocol';

/**
 * Off-policy estimators of a policy's value (expected reward per logged decision) from logs of
 * another policy, and the evaluation policies `bench ope` derives from a model's scores. Each
 * logged decision i is a context x_i (one slot of one request), the item a_i the logging policy
 * showed there with propensity p_i, and its reward r_i (click = 1). The importance weight of an
 * evaluation policy π is w_i = π(a_i | x_i) / p_i, clipped at `clip` (the count of clipped weights
 * is reported: clipping trades variance for bias).
 *
 * - IPS: (1/n) Σ w_i r_i (unbiased without clipping when p_i > 0 wherever π puts mass).
 * - SNIPS: Σ w_i r_i / Σ w_i (self-normalised: bounded by the rewards, slightly biased).
 * - DM: (1/n) Σ_i Σ_a π(a | x_i) q̂(x_i, a), the model's own predicted reward.
 * - DR: DM + (1/n) Σ w_i (r_i − q̂(x_i, a_i)) (unbiased if either q̂ or the propensities are right).
 * - ESS: (Σ w)² / Σ w², how many logged decisions the estimate effectively rests on.
 */

/** What an evaluation policy says about each logged decision. */
export interface PolicyOnLog {
  /** π(a_i | x_i): the policy's probability of the logged item in the logged slot. */
  pLogged: ArrayLike<number>;
  /** Σ_a π(a | x_i) q̂(x_i, a), the direct method's value of each context (for DM and DR). */
  dm?: ArrayLike<number>;
  /** q̂(x_i, a_i), the predicted reward of the logged item (for DR). */
  qLogged?: ArrayLike<number>;
}

export interface OpeEstimate {
  ips: number;
  /** null when no logged decision has a positive weight. */
  snips: number | null;
  dm?: number;
  dr?: number;
  ess: number;
  /** Decisions with a positive weight (the policy could have shown the logged item there). */
  matched: number;
  /** Weights above `clip` (each counted at `clip`). */
  clipped: number;
  maxWeight: number;
}

/**
 * The estimates of one policy on `n` logged decisions. `clip` bounds every weight (default:
 * unbounded). Rewards are any finite numbers; propensities must be in (0, 1].
 */
export function estimatePolicyValue(
  rewards: ArrayLike<number>,
  propensities: ArrayLike<number>,
  policy: PolicyOnLog,
  clip = Number.POSITIVE_INFINITY,
): OpeEstimate {
  const n = rewards.length;
  if (propensities.length !== n || policy.pLogged.length !== n)
    throw new FreshetError('BAD_REQUEST', 'rewards, propensities and policy probabilities differ in length');
  if (n === 0) throw new FreshetError('BAD_REQUEST', 'no logged decisions to estimate from');
  if (!(clip > 0)) throw new FreshetError('BAD_REQUEST', `clip must be positive, got ${clip}`);
  const hasDm = policy.dm !== undefined && policy.qLogged !== undefined;
  let sw = 0;
  let sw2 = 0;
  let swr = 0;
  let sdm = 0;
  let scorr = 0;
  let matched = 0;
  let clipped = 0;
  let maxWeight = 0;
  for (let i = 0; i < n; i++) {
    const p = propensities[i]!;
    if (!(p > 0 && p <= 1))
      throw new FreshetError('BAD_REQUEST', `decision ${i}: propensity ${p} is not in (0, 1]`);
    const raw = policy.pLogged[i]! / p;
    if (raw > clip) clipped++;
    const w = Math.min(raw, clip);
    const r = rewards[i]!;
    if (w > 0) matched++;
    maxWeight = Math.max(maxWeight, w);
    sw += w;
    sw2 += w * w;
    swr += w * r;
    if (hasDm) {
      sdm += policy.dm![i]!;
      scorr += w * (r - policy.qLogged![i]!);
    }
  }
  const out: OpeEstimate = {
    ips: swr / n,
    snips: sw > 0 ? swr / sw : null,
    ess: sw2 > 0 ? (sw * sw) / sw2 : 0,
    matched,
    clipped,
    maxWeight,
  };
  if (hasDm) {
    out.dm = sdm / n;
    out.dr = (sdm + scorr) / n;
  }
  return out;
}

/**
 * The candidates in the model's ranking: indices by score, highest first, ties by index (so a
 * model whose scores are all equal ranks the candidates in their order).
 */
export function rankCandidates(scores: ArrayLike<number>): number[] {
  return Array.from({ length: scores.length }, (_, i) => i).sort((a, b) => scores[b]! - scores[a]! || a - b);
}

/** The deterministic ranking policy: slot k shows the k-th ranked candidate (none past the list). */
export function argmaxSlotProbabilities(scores: ArrayLike<number>, slot: number): Float64Array {
  const out = new Float64Array(scores.length);
  const ranked = rankCandidates(scores);
  if (slot < ranked.length) out[ranked[slot]!] = 1;
  return out;
}

/** The deepest slot {@link softmaxSlotProbabilities} computes exactly. */
export const MAX_SOFTMAX_SLOT = 2;

/**
 * The stochastic ranking policy: a Plackett–Luce ranking of softmax(scores / temperature), i.e.
 * each slot samples from the softmax of the candidates not placed above it. Returns each
 * candidate's marginal probability of being shown in `slot` (0-based), exact for slots 0–2
 * (O(n²) for slot 2); deeper slots are a BAD_REQUEST.
 */
export function softmaxSlotProbabilities(
  scores: ArrayLike<number>,
  slot: number,
  temperature: number,
): Float64Array {
  if (!(temperature > 0))
    throw new FreshetError('BAD_REQUEST', `temperature must be positive, got ${temperature}`);
  if (!Number.isInteger(slot) || slot < 0 || slot > MAX_SOFTMAX_SLOT)
    throw new FreshetError(
      'BAD_REQUEST',
      `the softmax policy's slot probabilities are exact for slots 0-${MAX_SOFTMAX_SLOT}; got slot ${slot}`,
    );
  const n = scores.length;
  const out = new Float64Array(n);
  if (slot >= n) return out;
  let max = Number.NEGATIVE_INFINITY;
  for (let i = 0; i < n; i++) max = Math.max(max, scores[i]! / temperature);
  const e = Float64Array.from({ length: n }, (_, i) => Math.exp(scores[i]! / temperature - max));
  let total = 0;
  for (const x of e) total += x;
  const p = e.map((x) => x / total);
  // 1 − p_b: a candidate that takes all the mass leaves 0 there, and the terms it divides are skipped
  const rest = p.map((x) => 1 - x);
  if (slot === 0) return p;
  if (slot === 1) {
    // P(a second) = Σ_{b≠a} p_b · p_a / (1 − p_b)
    let s = 0;
    for (let b = 0; b < n; b++) s += rest[b]! > 0 ? p[b]! / rest[b]! : 0;
    for (let a = 0; a < n; a++) out[a] = p[a]! * (s - (rest[a]! > 0 ? p[a]! / rest[a]! : 0));
    return normalise(out);
  }
  // P(a third) = p_a · Σ_{b≠c, both ≠a} coef(b, c), coef(b, c) = p_b p_c / ((1 − p_b)(1 − p_b − p_c)):
  // the sum over all ordered pairs less the pairs that contain a
  const row = new Float64Array(n);
  const col = new Float64Array(n);
  let all = 0;
  for (let b = 0; b < n; b++) {
    if (!(rest[b]! > 0)) continue;
    for (let c = 0; c < n; c++) {
      if (c === b) continue;
      const left = rest[b]! - p[c]!;
      if (!(left > 0)) continue;
      const coef = (p[b]! * p[c]!) / (rest[b]! * left);
      all += coef;
      row[b] = row[b]! + coef;
      col[c] = col[c]! + coef;
    }
  }
  for (let a = 0; a < n; a++) out[a] = p[a]! * Math.max(0, all - row[a]! - col[a]!);
  return normalise(out);
}

/** The uniformly random ranking: every candidate in every slot with probability 1/n. */
export function uniformSlotProbabilities(candidates: number, slot: number): Float64Array {
  return new Float64Array(candidates).fill(slot < candidates ? 1 / candidates : 0);
}

// Rounding leaves the slot's marginals a hair off 1; the policy fills the slot for sure.
function normalise(x: Float64Array): Float64Array {
  let s = 0;
  for (const v of x) s += v;
  if (s > 0) for (let i = 0; i < x.length; i++) x[i] = x[i]! / s;
  return x;
}
