import { defineConfig } from 'vitest/config';

// Tests import the built packages (dist/), so `npm test` builds first. Forks, not threads:
// tests start nats-server and worker pools, and a crashed fork cannot take the others along.
export default defineConfig({
  test: {
    include: ['packages/*/test/**/*.test.ts', 'test/**/*.test.ts'],
    pool: 'forks',
    maxWorkers: 2,
    testTimeout: 60_000,
    hookTimeout: 60_000,
    teardownTimeout: 20_000,
    globalSetup: ['./test/global-setup.ts'],
    reporters: ['default'],
  },
});
