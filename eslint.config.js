// Typed linting: rules that need the type checker (floating promises, unsafe any) catch the
// bugs a message-driven system is prone to, so they run on every `npm test`.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';
import { createNodeResolver, importX } from 'eslint-plugin-import-x';

// The layering (README.md): which workspace packages each package's src may import. Tests may
// import anything; pnpm already refuses undeclared dependencies, but not devDependencies (the
// worker's tests use the shard), so this is what keeps src from reaching up a layer.
const layers = {
  protocol: [],
  nats: ['protocol'],
  model: ['protocol'],
  client: ['protocol', 'nats'],
  shard: ['protocol', 'nats'],
  testkit: ['protocol', 'nats'],
  worker: ['protocol', 'nats', 'model'],
  serving: ['protocol', 'nats', 'model'],
  bench: ['protocol', 'nats', 'model', 'client', 'shard', 'worker', 'serving'],
  cli: ['protocol', 'nats', 'model', 'client', 'shard', 'worker', 'serving', 'bench'],
};
const layerRules = Object.entries(layers).map(([pkg, allowed]) => {
  const banned = Object.keys(layers).filter((p) => p !== pkg && !allowed.includes(p));
  return {
    files: [`packages/${pkg}/src/**/*.ts`],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: [
            {
              group: banned.flatMap((p) => [`@freshet/${p}`, `@freshet/${p}/*`]),
              message: `@freshet/${pkg} may import only ${allowed.map((p) => `@freshet/${p}`).join(', ') || 'no workspace package'} (the layering in README.md).`,
            },
          ],
        },
      ],
    },
  };
});

export default tseslint.config(
  { ignores: ['**/dist/**', '**/node_modules/**', 'scripts/**', 'eslint.config.js', '**/*.mjs', '**/*.cjs'] },
  js.configs.recommended,
  ...tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: {
      parserOptions: {
        projectService: false,
        project: ['./packages/*/tsconfig.json', './tsconfig.test.json'],
        tsconfigRootDir: import.meta.dirname,
      },
    },
    rules: {
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/no-misused-promises': ['error', { checksVoidReturn: { arguments: false } }],
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      '@typescript-eslint/consistent-type-imports': 'error',
      '@typescript-eslint/restrict-template-expressions': [
        'error',
        { allowNumber: true, allowBoolean: true },
      ],
      '@typescript-eslint/no-unnecessary-type-assertion': 'off',
    },
  },
  {
    // Runtime import cycles within a package (a module used before it is initialised). Other
    // packages are reached through node_modules and count as external: project references
    // already forbid cycles between packages. Type-only imports are not followed by the rule.
    plugins: { 'import-x': importX },
    settings: {
      'import-x/extensions': ['.ts', '.js'],
      'import-x/parsers': { '@typescript-eslint/parser': ['.ts'] },
      'import-x/resolver-next': [
        createNodeResolver({ extensionAlias: { '.js': ['.ts', '.js'] }, symlinks: false }),
      ],
    },
    rules: { 'import-x/no-cycle': ['error', { ignoreExternal: true }] },
  },
  ...layerRules,
  {
    files: ['**/test/**/*.ts'],
    rules: {
      '@typescript-eslint/no-unsafe-assignment': 'off',
      '@typescript-eslint/no-unsafe-member-access': 'off',
      '@typescript-eslint/no-non-null-assertion': 'off',
    },
  },
);
