import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

// The repository stands alone: nothing points outside it, and each package README's file table
// lists exactly the files of its src/ (a file added or moved without its README fails here).
const root = fileURLToPath(new URL('..', import.meta.url));
const skip = new Set(['node_modules', 'dist', '.git', 'results']);

function walk(dir: string, out: string[] = []): string[] {
  for (const name of readdirSync(dir)) {
    if (skip.has(name) || name.startsWith('.freshet')) continue;
    const p = join(dir, name);
    if (statSync(p).isDirectory()) walk(p, out);
    else out.push(p);
  }
  return out;
}

describe('the repository stands alone', () => {
  it("no file refers to a folder beside the repository (the team's shared one)", () => {
    const text = /\.(ts|js|mjs|json|md|ya?ml|py|sh)$|Dockerfile$/;
    const hits = walk(root)
      .filter((f) => text.test(f))
      .filter((f) => readFileSync(f, 'utf8').includes('../' + 'shared'))
      .map((f) => relative(root, f));
    expect(hits).toEqual([]);
  });

  it("every package README's Files table lists exactly the files under its src/", () => {
    const wrong: string[] = [];
    for (const pkg of readdirSync(join(root, 'packages'))) {
      const src = join(root, 'packages', pkg, 'src');
      const files = walk(src)
        .filter((f) => f.endsWith('.ts'))
        .map((f) => relative(src, f))
        .sort();
      const readme = readFileSync(join(root, 'packages', pkg, 'README.md'), 'utf8');
      const at = readme.indexOf('## Files\n');
      if (at < 0) {
        wrong.push(`${pkg}: README has no "## Files" section`);
        continue;
      }
      const section = readme.slice(at, readme.indexOf('\n## ', at + 1) >>> 0 || undefined);
      const listed = [...section.matchAll(/^\| `([^`]+\.ts)`/gm)].map((m) => m[1]!).sort();
      const missing = files.filter((f) => !listed.includes(f));
      const gone = listed.filter((f) => !files.includes(f));
      if (missing.length > 0) wrong.push(`${pkg}: not in README: ${missing.join(', ')}`);
      if (gone.length > 0) wrong.push(`${pkg}: in README but not in src/: ${gone.join(', ')}`);
    }
    expect(wrong).toEqual([]);
  });
});
