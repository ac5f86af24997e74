import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { FreshetError } from '@freshet/protocol';

/**
 * The built entry file of a worker thread that sits beside the module at `metaUrl` (its
 * `import.meta.url`). A thread runs JavaScript only: from a TypeScript source (tests run the
 * sources) it is the package's `dist` copy, which must have been built.
 */
export function threadEntry(metaUrl: string, file: string, pkg: string): string {
  const here = fileURLToPath(metaUrl);
  const dir = dirname(here);
  const path = here.endsWith('.ts') ? join(dir, '..', 'dist', file) : join(dir, file);
  if (!existsSync(path)) throw new FreshetError('CONFIG', `thread entry ${path} missing: build ${pkg} first`);
  return path;
}
