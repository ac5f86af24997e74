import { existsSync } from 'node:fs';

/**
 * Debian's Chromium for the headless browser tests: FRESHET_CHROMIUM, else the usual paths.
 * `npm test` installs it (apt-get, as root) before the suite runs; a missing browser fails the
 * test with how to get it, never a skip.
 */
export function chromiumPath(env: NodeJS.ProcessEnv = process.env): string {
  const candidates = [env.FRESHET_CHROMIUM, '/usr/bin/chromium', '/usr/bin/chromium-browser'];
  const p = candidates.find((c): c is string => !!c && existsSync(c));
  if (!p) {
    throw new Error(
      'chromium not found: run `npm test` (it installs it as root on Debian/Ubuntu), ' +
        'apt-get install chromium, or set FRESHET_CHROMIUM',
    );
  }
  return p;
}
