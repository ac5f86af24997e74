import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { InvalidArgumentError } from 'commander';

/** Commander argument parsers: a bad value is a usage error naming what was expected. */
export function positiveInt(v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n <= 0) throw new InvalidArgumentError('expected a positive integer');
  return n;
}
export function nonNegativeInt(v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0) throw new InvalidArgumentError('expected a non-negative integer');
  return n;
}
export function positiveNumber(v: string): number {
  const n = Number(v);
  if (!Number.isFinite(n) || n <= 0) throw new InvalidArgumentError('expected a positive number');
  return n;
}
export function nonNegativeNumber(v: string): number {
  const n = Number(v);
  if (!Number.isFinite(n) || n < 0) throw new InvalidArgumentError('expected a non-negative number');
  return n;
}
/** `--dense shard|replica`: where workers' dense tables learn. */
export function denseMode(v: string): 'shard' | 'replica' {
  if (v !== 'shard' && v !== 'replica') throw new InvalidArgumentError('expected shard or replica');
  return v;
}
/** `--encoding json|msgpack`: how events are published. */
export function eventEncoding(v: string): 'json' | 'msgpack' {
  if (v !== 'json' && v !== 'msgpack') throw new InvalidArgumentError('expected json or msgpack');
  return v;
}
/** A comma-separated list of integers ≥ `min` (`--shards 2,4,8`). */
export function intList(v: string, min: number): number[] {
  const out = v.split(',').map((s) => Number(s.trim()));
  if (out.some((n) => !Number.isInteger(n) || n < min)) {
    throw new InvalidArgumentError(`expected comma-separated integers ≥ ${min}`);
  }
  return out;
}

/**
 * The repository root (where pnpm-workspace.yaml is), found from this module rather than the
 * cwd: `freshet bench --save` keeps results in `bench/results`.
 */
export function repoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 8; i++) {
    if (existsSync(join(dir, 'pnpm-workspace.yaml'))) return dir;
    dir = dirname(dir);
  }
  return process.cwd();
}
