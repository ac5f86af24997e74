import { existsSync } from 'node:fs';
import { isAbsolute, join, resolve } from 'node:path';
import { FreshetError } from '@freshet/protocol';

/** Where the README's Datasets section tells users to put the public datasets. */
export const DATA_DIR_ENV = 'FRESHET_DATA_DIR';

/**
 * Resolves the PATH of a `kind:PATH` dataset ref to an absolute path: as given when absolute,
 * else relative to the current directory when it exists there, else relative to
 * `$FRESHET_DATA_DIR` (so `--data criteo:criteo/train.txt` works from any directory once the
 * datasets are downloaded into one place). Refs without a path (`synthetic`, `synthetic:seed=2`)
 * pass through. A path found nowhere is a CONFIG error naming every place it looked.
 */
export function resolveDataRef(ref: string, env: NodeJS.ProcessEnv, cwd = process.cwd()): string {
  const i = ref.indexOf(':');
  if (i < 0) return ref;
  const kind = ref.slice(0, i);
  const path = ref.slice(i + 1);
  if (kind === 'synthetic' || path === '') return ref;
  if (isAbsolute(path)) return ref;
  const tried = [resolve(cwd, path)];
  const base = env[DATA_DIR_ENV];
  if (base) tried.push(resolve(cwd, join(base, path)));
  const found = tried.find((p) => existsSync(p));
  if (found) return `${kind}:${found}`;
  throw new FreshetError(
    'CONFIG',
    `${ref}: no such file (looked in ${tried.join(' and ')}). ` +
      (base ? '' : `Set ${DATA_DIR_ENV} to the folder holding your datasets, or give a full path. `) +
      'The README says where to download each public dataset (section Datasets).',
  );
}
