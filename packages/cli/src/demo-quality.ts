/**
 * Expected AUC of `scores` against Bernoulli labels with probabilities `truth`: every pair counts
 * as a positive with weight p and a negative with weight 1 − p. It measures how well served
 * scores rank what users would actually click, without the noise of sampling labels.
 */
export function expectedAuc(scores: ArrayLike<number>, truth: ArrayLike<number>): number {
  const n = scores.length;
  const order = Array.from({ length: n }, (_, i) => i).sort((a, b) => scores[a]! - scores[b]!);
  let negBelow = 0;
  let area = 0;
  let pos = 0;
  let neg = 0;
  for (let i = 0; i < n;) {
    // Ties share half credit: process a run of equal scores together.
    let j = i;
    let tiePos = 0;
    let tieNeg = 0;
    while (j < n && scores[order[j]!] === scores[order[i]!]) {
      const p = truth[order[j]!]!;
      tiePos += p;
      tieNeg += 1 - p;
      j++;
    }
    area += tiePos * (negBelow + tieNeg / 2);
    negBelow += tieNeg;
    pos += tiePos;
    neg += tieNeg;
    i = j;
  }
  return pos > 0 && neg > 0 ? area / (pos * neg) : 0.5;
}
