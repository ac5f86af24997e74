/**
 * The one tokenizer of free text (search queries, titles) in Freshet: the joiner turns an
 * impression's `query` into tokens with it when training, and the encoder splits a string value
 * of a `tokens` field with it when serving (and for examples carrying a string), so "Red-Shoes,
 * cheap!" is `red`, `shoes`, `cheap` on both sides. Lowercase; tokens are runs of Unicode letters
 * and digits (anything else separates); at most `max` tokens, the first ones.
 */
export function tokenizeText(text: string, max = 256): string[] {
  const out: string[] = [];
  for (const t of text.toLowerCase().split(/[^\p{L}\p{N}]+/u)) {
    if (t.length === 0) continue;
    if (out.length >= max) break;
    out.push(t);
  }
  return out;
}
