import { describe, expect, it } from 'vitest';
import { createModel, type EncodedBatch } from '@freshet/model';
import { feedbackEventSchema, tokenizeText, type FeedbackEventInput } from '@freshet/protocol';
import { RequestEncoder } from '@freshet/serving';
import { Joiner } from '@freshet/worker';

// Training and serving must turn a query into the same model inputs. Training: an impression
// with `query` goes through the worker's joiner (which tokenizes it) and the model's encoder.
// Serving: the same query as request context goes through the serving node's request encoder.
// For every query of the corpus, the ids and pooling weights in the query's slots must be equal.

const corpus = [
  'Red-Shoes, cheap!',
  'red shoes cheap',
  'RED  SHOES',
  '  leading and trailing  ',
  'tabs\tand\nnewlines',
  "men's running-shoes (size 42)",
  'iPhone 15 Pro Max 256GB',
  'ÉCOLE élève Ökonomie straße',
  'Ｆｕｌｌｗｉｄｔｈ ｃａｆé',
  '東京 ラーメン 安い',
  'кроссовки nike мужские',
  'تخفيضات أحذية',
  'emoji 👟 shoes 🔥🔥',
  'c++ vs c# vs f#',
  'under_score dot.separated slash/separated',
  'price<100 & color=blue',
  '100% cotton t-shirt',
  '#hashtag @mention',
  '!!!',
  '',
  'a',
  '1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20',
  'über-cool   Mädchen—Jacke',
  'naïve café résumé',
  'x'.repeat(300),
  'mixed123CASE456 tokens',
  "don't stop believin'",
  'e-mail: someone@example.com',
  'https://example.com/path?q=shoes',
  '  ',
];

const model = createModel({
  name: 'parity',
  kind: 'lr',
  features: {
    fields: [
      { kind: 'categorical', name: 'user' },
      { kind: 'categorical', name: 'item' },
      { kind: 'tokens', name: 'query', maxTokens: 8 },
    ],
  },
});
const layout = model.layout.features;
const q = layout.sparse.find((s) => s.name === 'query')!;

/** The (id, weight) pairs in the query's slots of example `b`, in slot order. */
function querySlots(batch: EncodedBatch, b = 0): string[] {
  const s = batch.sparse[0]!;
  const out: string[] = [];
  for (let slot = q.slot; slot < q.slot + q.width; slot++) {
    const k = s.index[b * layout.slots + slot]!;
    if (k < 0) continue;
    out.push(`${s.keys[2 * k]}:${s.keys[2 * k + 1]}@${s.slotWeights?.[b * layout.slots + slot]}`);
  }
  return out;
}

const T0 = 1_700_000_000_000;

function trained(query: string): string[] {
  const j = new Joiner({ windowMs: 60_000, lateWindowMs: 600_000, orphanWaitMs: 30_000, maxSkewMs: 5_000 });
  const ev = (e: Record<string, unknown>) =>
    feedbackEventSchema.parse({ user: 'u1', request: 'r1', item: 'i1', ts: T0, ...e } as FeedbackEventInput);
  j.push(ev({ id: 'imp', kind: 'impression', query }));
  const [ex] = j.push(ev({ id: 'clk', kind: 'click', ts: T0 + 10 }));
  expect(ex, `a positive for ${JSON.stringify(query)}`).toBeDefined();
  return querySlots(model.encode([{ features: ex!.features, label: ex!.label }]));
}

const serving = new RequestEncoder(model, { user: 'user', item: 'item' });
function served(query: string): string[] {
  return querySlots(serving.encode('u1', { query }, [{ item: 'i1' }]));
}

describe('one tokenizer for training and serving', () => {
  it('gives the same query inputs for every query of the corpus', () => {
    let nonEmpty = 0;
    for (const query of corpus) {
      const t = trained(query);
      expect(served(query), JSON.stringify(query)).toEqual(t);
      expect(t.length, JSON.stringify(query)).toBe(Math.min(tokenizeText(query).length, q.width));
      if (t.length > 0) nonEmpty++;
    }
    expect(nonEmpty).toBeGreaterThan(corpus.length - 6);
  });

  it('splits on punctuation and folds case', () => {
    expect(tokenizeText('Red-Shoes, cheap!')).toEqual(['red', 'shoes', 'cheap']);
    expect(tokenizeText('東京 ラーメン')).toEqual(['東京', 'ラーメン']);
    expect(tokenizeText('a b c d', 2)).toEqual(['a', 'b']);
    expect(served('Red-Shoes, cheap!')).toEqual(served('red shoes CHEAP'));
  });
});
