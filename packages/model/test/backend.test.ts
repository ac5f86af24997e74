import { describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { FreshetError } from '@freshet/protocol';
import { activeBackend, initBackend } from '../src/index.js';

describe('initBackend', () => {
  it('reports wasm (SIMD) or tensorflow, never a silent cpu, and is what tfjs really runs', async () => {
    const info = await initBackend();
    expect(['wasm', 'tensorflow']).toContain(info.backend);
    expect(tf.getBackend()).toBe(info.backend);
    if (info.backend === 'wasm') expect(info.simd).toBe(true);
    expect(activeBackend()).toEqual(info);
    // Idempotent per thread.
    await expect(initBackend('auto')).resolves.toEqual(info);
  });

  it('refuses to switch a thread to another backend', async () => {
    const info = await initBackend();
    const other = info.backend === 'wasm' ? 'cpu' : 'wasm';
    await expect(initBackend(other)).rejects.toSatisfy(
      (e: unknown) => e instanceof FreshetError && e.code === 'CONFIG',
    );
  });
});
