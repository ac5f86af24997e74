import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll } from 'vitest';

/**
 * Temporary directories for a test file, removed after its tests, failed or not. Call it in the
 * file or describe body (a hook registered from inside a running test is not guaranteed to run);
 * the returned function makes one directory named `freshet-<prefix>-…`.
 */
export function useTempDirs(): (prefix: string) => string {
  const dirs: string[] = [];
  afterAll(() => {
    for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
  });
  return (prefix) => {
    const d = mkdtempSync(join(tmpdir(), `freshet-${prefix}-`));
    dirs.push(d);
    return d;
  };
}
