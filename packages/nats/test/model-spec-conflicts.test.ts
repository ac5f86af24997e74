import { describe, expect, it } from 'vitest';
import { parseModelSpec } from '@freshet/protocol';
import { modelSpecConflicts } from '../src/index.js';

const spec = (of: string, lr = 0.01) =>
  parseModelSpec({
    name: 'm',
    tables: [
      { name: 'emb', dim: 4, optimizer: { kind: 'adam', lr } },
      { name: 'p0', kind: 'dense', dim: 4, part: { of, index: 0, count: 2, offset: 0 } },
      { name: 'p1', kind: 'dense', dim: 2, part: { of, index: 1, count: 2, offset: 4 } },
    ],
  });

describe('model spec conflicts', () => {
  it('a learning rate may change, not which tensor a part belongs to, nor the partitioning', () => {
    expect(modelSpecConflicts(spec('w'), spec('w', 0.1))).toEqual([]);
    expect(modelSpecConflicts(spec('w'), spec('v'))).toEqual([
      'table 1 (p0): part w[0..] (0/2) -> v[0..] (0/2)',
      'table 2 (p1): part w[4..] (1/2) -> v[4..] (1/2)',
    ]);
    const whole = parseModelSpec({
      name: 'm',
      tables: [
        { name: 'emb', dim: 4 },
        { name: 'w', kind: 'dense', dim: 6 },
      ],
    });
    expect(modelSpecConflicts(spec('w'), whole)).toContain('table count 3 -> 2');
  });
});
