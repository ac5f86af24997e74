import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
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

  // eslint's import-x/no-cycle follows runtime imports only; a cycle of type imports still ties
  // the files together (none can be read or moved alone), so shared types go to a leaf module.
  it("no import cycle among a package's src files, type-only imports included", () => {
    const cycles: string[] = [];
    for (const pkg of readdirSync(join(root, 'packages'))) {
      const src = join(root, 'packages', pkg, 'src');
      const files = walk(src).filter((f) => f.endsWith('.ts'));
      const imports = new Map<string, string[]>();
      for (const f of files) {
        const specs = readFileSync(f, 'utf8').matchAll(/(?:from|import)\s*\(?\s*'(\.\.?\/[^']+)'/g);
        const deps = [...specs].map((m) => join(dirname(f), m[1]!.replace(/\.js$/, '.ts')));
        imports.set(f, deps);
      }
      const done = new Set<string>();
      const path: string[] = [];
      const visit = (f: string): void => {
        const at = path.indexOf(f);
        if (at >= 0) {
          cycles.push(`${pkg}: ${[...path.slice(at), f].map((p) => relative(src, p)).join(' > ')}`);
          return;
        }
        if (done.has(f)) return;
        path.push(f);
        for (const d of imports.get(f)!) if (imports.has(d)) visit(d);
        path.pop();
        done.add(f);
      };
      for (const f of files) visit(f);
    }
    expect(cycles).toEqual([]);
  });
});
