import { z } from 'zod';

/**
 * Exploration over the ranked list: a rank request (or the node's default) may ask for a
 * stochastic ranking instead of the greedy one, so the logs a cluster learns from show items the
 * model would not pick, and off-policy evaluation has the propensities it needs.
 *
 * - `none`: the greedy ranking (each shown item's propensity is 1).
 * - `epsilon-greedy`: each slot, top to bottom, shows the best remaining candidate with
 *   probability 1 − ε, else a uniformly random remaining one (which may be the best too).
 * - `softmax`: each slot samples the remaining candidates by softmax(logit / temperature)
 *   (a Plackett–Luce ranking; Thompson-like without a posterior).
 *
 * The propensity returned with each shown item is the probability that its slot showed it given
 * the items placed above it: for slot 0 the marginal, deeper down the slot's own decision. Over
 * the remaining candidates of a slot these probabilities sum to 1. Publishers send it back on
 * the impression (`propensity`), where the joiner keeps it for off-policy evaluation.
 */
export const explorationSchema = z.discriminatedUnion('kind', [
  z.object({ kind: z.literal('none') }).strict(),
  z
    .object({
      kind: z.literal('epsilon-greedy'),
      epsilon: z.number().min(0).max(1),
    })
    .strict(),
  z
    .object({
      kind: z.literal('softmax'),
      /** On the logits; small is near greedy. */
      temperature: z.number().min(0.01).max(100),
    })
    .strict(),
]);
export type Exploration = z.infer<typeof explorationSchema>;

/** The shown slots of an explored ranking, best slot first. */
export interface ExploredRanking {
  /** Candidate indices, slot by slot. */
  order: number[];
  /** The probability each slot's draw gave its item, given the items above it. */
  propensity: number[];
  /** Whether the slot shows something other than the best remaining candidate. */
  explored: boolean[];
}

/**
 * Ranks `scores` (probabilities) into `k` slots under `exploration`, drawing from `random`
 * (uniform in [0, 1)). Ties rank by index, as the greedy ranking does.
 */
export function exploreRanking(
  scores: ArrayLike<number>,
  k: number,
  exploration: Exploration,
  random: () => number,
): ExploredRanking {
  const n = scores.length;
  // remaining candidates in greedy order: the best remaining is always remaining[0]
  const remaining = Array.from({ length: n }, (_, i) => i).sort((a, b) => scores[b]! - scores[a]! || a - b);
  const out: ExploredRanking = { order: [], propensity: [], explored: [] };
  const slots = Math.min(k, n);
  const logits =
    exploration.kind === 'softmax'
      ? Array.from(scores, (p) => {
          const q = Math.min(Math.max(p, 1e-7), 1 - 1e-7);
          return Math.log(q / (1 - q)) / exploration.temperature;
        })
      : [];
  for (let s = 0; s < slots; s++) {
    const m = remaining.length;
    let pick = 0;
    let p = 1;
    if (exploration.kind === 'epsilon-greedy') {
      const eps = exploration.epsilon;
      if (random() < eps) pick = Math.min(m - 1, Math.floor(random() * m));
      p = (pick === 0 ? 1 - eps : 0) + eps / m;
    } else if (exploration.kind === 'softmax') {
      const max = logits[remaining[0]!]!;
      const w = remaining.map((i) => Math.exp(logits[i]! - max));
      const total = w.reduce((a, b) => a + b, 0);
      let u = random() * total;
      pick = m - 1;
      for (let j = 0; j < m; j++) {
        u -= w[j]!;
        if (u < 0) {
          pick = j;
          break;
        }
      }
      p = w[pick]! / total;
    }
    out.order.push(remaining[pick]!);
    out.propensity.push(p);
    out.explored.push(pick !== 0);
    remaining.splice(pick, 1);
  }
  return out;
}
