import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { useTempDirs } from '@freshet/testkit';
import { resolveDataRef } from '../src/data-ref.js';

const tempDir = useTempDirs();

describe('resolveDataRef', () => {
  it('finds a relative path in the current directory first, then under FRESHET_DATA_DIR', () => {
    const cwd = tempDir('cwd');
    const data = tempDir('data');
    mkdirSync(join(data, 'criteo'));
    writeFileSync(join(data, 'criteo', 'train.txt'), '');
    writeFileSync(join(cwd, 'local.txt'), '');
    const env = { FRESHET_DATA_DIR: data };
    expect(resolveDataRef('criteo:criteo/train.txt', env, cwd)).toBe(
      `criteo:${join(data, 'criteo', 'train.txt')}`,
    );
    expect(resolveDataRef('criteo:local.txt', env, cwd)).toBe(`criteo:${join(cwd, 'local.txt')}`);
    // The same name in both: the current directory wins.
    mkdirSync(join(cwd, 'criteo'));
    writeFileSync(join(cwd, 'criteo', 'train.txt'), '');
    expect(resolveDataRef('criteo:criteo/train.txt', env, cwd)).toBe(
      `criteo:${join(cwd, 'criteo', 'train.txt')}`,
    );
  });

  it('passes absolute paths and synthetic refs through, and names every place it looked', () => {
    expect(resolveDataRef('obd:/nowhere/men.csv', {}, '/tmp')).toBe('obd:/nowhere/men.csv');
    expect(resolveDataRef('synthetic', {}, '/tmp')).toBe('synthetic');
    expect(resolveDataRef('synthetic:seed=2', {}, '/tmp')).toBe('synthetic:seed=2');
    const cwd = tempDir('cwd');
    expect(() => resolveDataRef('movielens:ml-100k', {}, cwd)).toThrow(/FRESHET_DATA_DIR/);
    expect(() => resolveDataRef('movielens:ml-100k', { FRESHET_DATA_DIR: '/d' }, cwd)).toThrow(
      new RegExp(`${join(cwd, 'ml-100k')} and /d/ml-100k`),
    );
  });
});
