import { describe, expect, it } from 'vitest';
import { spawnChild, waitFor } from '../src/index.js';

// stop() is what the file-level hook runs for every child still alive after a test file.
describe('spawnChild', () => {
  it('captures output and stops a child with SIGTERM', async () => {
    const c = spawnChild(process.execPath, ['-e', 'console.log("hi"); setInterval(() => {}, 1000)']);
    await waitFor(() => c.output().includes('hi'), { message: 'child output' });
    const code = await c.stop(2000);
    expect(code).toBe('SIGTERM');
  });

  it('escalates to SIGKILL when SIGTERM is ignored', async () => {
    const c = spawnChild(process.execPath, [
      '-e',
      'process.on("SIGTERM", () => {}); console.log("ready"); setInterval(() => {}, 1000)',
    ]);
    await waitFor(() => c.output().includes('ready'), { message: 'child ready' });
    expect(await c.stop(300)).toBe('SIGKILL');
  });
});
