import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { feedbackEventSchema, type FeedbackEventInput } from '@freshet/protocol';
import { useTempDirs, writeCriteoFixture } from '@freshet/testkit';
import { readCriteo } from '../src/index.js';

const fx = writeCriteoFixture(useTempDirs()('criteo'), { rows: 600, seed: 2 });
const file = fx.path;
// A row with an empty categorical (C22 is mostly empty in Criteo and in the fixture).
const withEmpty = fx.rows.findIndex((r) => r.cats[21] === '');

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
    // The fixture has empty categoricals: the test checks something.
    expect(empties).toBeGreaterThan(n);
    const row = events[withEmpty]!;
    expect(row.kind === 'example' && row.features.C22).toBe('');
  });

  it("leaves empty categoricals out with emptyCategorical: 'missing'", async () => {
    const events = await collect(readCriteo(file, { limit: withEmpty + 1, emptyCategorical: 'missing' }));
    const row = events[withEmpty];
    expect(row?.kind === 'example' && 'C22' in row.features).toBe(false);
    expect(row?.kind === 'example' && row.features.C1).toBe(fx.rows[withEmpty]!.cats[0]);
  });
});
