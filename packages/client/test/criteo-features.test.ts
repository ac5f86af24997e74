import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { feedbackEventSchema, type FeedbackEventInput } from '@freshet/protocol';
import { readCriteo } from '../src/index.js';

// Shared data lives next to the repository: <repo>/../shared/data.
const file = fileURLToPath(
  new URL('../../../../shared/data/criteo-kaggle-head10k/train_head10k.txt', import.meta.url),
);

async function collect(it: AsyncIterable<FeedbackEventInput>) {
  const out: FeedbackEventInput[] = [];
  for await (const e of it) out.push(e);
  return out;
}

describe('Criteo reader features', () => {
  it('sends exactly the columns of the TSV: empty categoricals as "", missing integers left out', async () => {
    const n = 500;
    const events = await collect(readCriteo(file, { limit: n }));
    const lines = readFileSync(file, 'utf8').split('\n').slice(0, n);
    expect(events).toHaveLength(n);
    let empties = 0;
    events.forEach((e, row) => {
      expect(feedbackEventSchema.safeParse(e).success).toBe(true);
      if (e.kind !== 'example') throw new Error(`row ${row}: ${e.kind}`);
      const cols = lines[row]!.split('\t');
      expect(e.label).toBe(Number(cols[0]));
      // The features the train bench's parseCriteoLine makes of the same line.
      const want: Record<string, string | number> = {};
      for (let i = 1; i <= 13; i++) if (cols[i] !== '') want[`I${i}`] = Number(cols[i]);
      for (let i = 0; i < 26; i++) want[`C${i + 1}`] = cols[14 + i]!;
      expect(e.features).toEqual(want);
      for (let i = 0; i < 26; i++) if (cols[14 + i] === '') empties++;
    });
    // The sample has empty categoricals (e.g. C22 of the first row): the test checks something.
    expect(empties).toBeGreaterThan(n);
    const first = events[0]!;
    expect(first.kind === 'example' && first.features.C22).toBe('');
  });

  it("leaves empty categoricals out with emptyCategorical: 'missing'", async () => {
    const [first] = await collect(readCriteo(file, { limit: 1, emptyCategorical: 'missing' }));
    expect(first?.kind === 'example' && 'C22' in first.features).toBe(false);
    expect(first?.kind === 'example' && first.features.C1).toBe('68fd1e64');
  });
});
