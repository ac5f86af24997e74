import { describe, expect, it } from 'vitest';
import { pushesState, type FreshetError } from '@freshet/protocol';
import { computeGradients, createModel, initRows, isSequentialFtrl } from '../src/index.js';

const fields = [
  { kind: 'categorical' as const, name: 'user' },
  { kind: 'numeric' as const, name: 'x' },
];
const code = (f: () => unknown) => {
  try {
    f();
  } catch (e) {
    return (e as FreshetError).code;
  }
  return 'none';
};

describe('sequential FTRL: which models, and what it needs', () => {
  it('is on for an lr model with FTRL on every table, off when a table says so or one is not FTRL', () => {
    const on = createModel({ kind: 'lr', features: { fields }, optimizer: { kind: 'ftrl' } });
    expect(isSequentialFtrl(on)).toBe(true);
    expect(on.spec.tables.every(pushesState)).toBe(true);
    const off = createModel({
      kind: 'lr',
      features: { fields },
      optimizer: { kind: 'ftrl' },
      tables: { wide: { optimizer: { kind: 'ftrl', sequential: false } } },
    });
    expect(isSequentialFtrl(off)).toBe(false);
    expect(off.spec.tables.some(pushesState)).toBe(false); // all or none: one table cannot go alone
    const mixed = createModel({
      kind: 'lr',
      features: { fields },
      optimizer: { kind: 'ftrl' },
      tables: { wide: { optimizer: { kind: 'adagrad' } } },
    });
    expect(mixed.spec.tables.some(pushesState)).toBe(false);
    const adam = createModel({ kind: 'lr', features: { fields } });
    expect(isSequentialFtrl(adam)).toBe(false);
  });

  it('asking for it on a model that needs a forward pass per example is a CONFIG error', () => {
    expect(
      code(() =>
        createModel({
          kind: 'fm',
          features: { fields: [fields[0]!, { kind: 'categorical', name: 'item' }] },
          optimizer: { kind: 'ftrl', sequential: true },
        }),
      ),
    ).toBe('CONFIG');
  });

  it('refuses rows without z and n (a pull that did not ask for state)', () => {
    const m = createModel({ kind: 'lr', features: { fields }, optimizer: { kind: 'ftrl' } });
    const batch = m.encode([
      { features: { user: 'a', x: 1 }, label: 1 },
      { features: { user: 'b', x: -1 }, label: 0 },
    ]);
    // initRows gives w only, one float per row
    expect(code(() => computeGradients(m, batch, initRows(m, batch)))).toBe('WRONG_LENGTH');
  });
});
