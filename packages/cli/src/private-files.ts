import { randomBytes } from 'node:crypto';
import { chmod, mkdir, rename, rm, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';

/**
 * Secrets on disk: a directory only its owner may enter, files only its owner may read.
 * `writeFile(..., { mode })` applies the mode only when it creates the file, so rewriting an
 * existing world-readable file would keep it world-readable; these helpers never rely on that.
 */

/** Creates `dir` (and parents) and sets it to 0700 even when it already existed. */
export async function privateDir(dir: string): Promise<void> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  await chmod(dir, 0o700);
}

/**
 * Writes `data` to `path` with mode 0600: into a fresh file created 0600, then renamed over the
 * old one, so no reader ever sees the content under a wider mode (or half written).
 */
export async function writePrivateFile(path: string, data: string): Promise<void> {
  const tmp = join(dirname(path), `.${randomBytes(6).toString('hex')}.tmp`);
  try {
    await writeFile(tmp, data, { mode: 0o600, flag: 'wx' });
    await rename(tmp, path);
  } catch (e) {
    await rm(tmp, { force: true });
    throw e;
  }
}
