import { afterAll, describe, expect, it } from 'vitest';
import { Worker } from 'node:worker_threads';
import { fileURLToPath } from 'node:url';
import {
  batchTransferList,
  computeGradients,
  createModel,
  initBackend,
  type GradientResult,
} from '../src/index.js';
import { mixedExamples, mixedSpec, noisyRows } from './helpers.js';

const workers: Worker[] = [];
afterAll(async () => {
  await Promise.all(workers.map((w) => w.terminate()));
});

describe('computeGradients in a worker thread', () => {
  it('gives the main thread bit-identical results from transferred buffers', async () => {
    const config = { kind: 'deepfm' as const, features: mixedSpec, embeddingDim: 4, hidden: [8] };
    await initBackend();
    const model = createModel(config);
    const batch = model.encode(mixedExamples(32, 9));
    const rows = noisyRows(model, batch, 4);
    const local = computeGradients(model, batch, rows);

    const worker = new Worker(fileURLToPath(new URL('./fixtures/grad-worker.mjs', import.meta.url)), {
      workerData: { config: model.config },
    });
    workers.push(worker);
    const next = () =>
      new Promise<Record<string, unknown>>((resolve, reject) => {
        worker.once('message', (m: Record<string, unknown>) => resolve(m));
        worker.once('error', reject);
      });
    const ready = await next();
    expect(ready).toMatchObject({ ready: true });
    expect(['wasm', 'tensorflow']).toContain(ready.backend);

    const rowsCopy = rows.map((r) => r.slice());
    const transfer = [...batchTransferList(batch), ...rowsCopy.map((r) => r.buffer as ArrayBuffer)];
    const reply = next();
    worker.postMessage({ batch, rows: rowsCopy }, transfer);
    // Transferred, not copied: the sender's views are detached.
    expect(batch.labels.length).toBe(0);
    const remote = (await reply) as unknown as GradientResult & { backend: string };
    expect(remote.loss).toBe(local.loss);
    expect(Array.from(remote.preds)).toEqual(Array.from(local.preds));
    expect(remote.grads.length).toBe(local.grads.length);
    local.grads.forEach((g, i) => expect(Array.from(remote.grads[i]!)).toEqual(Array.from(g!)));
  });

  it('reports a bad batch as an error envelope instead of dying', async () => {
    const worker = new Worker(fileURLToPath(new URL('./fixtures/grad-worker.mjs', import.meta.url)), {
      workerData: { config: { kind: 'lr', features: mixedSpec } },
    });
    workers.push(worker);
    const next = () => new Promise<Record<string, unknown>>((resolve) => worker.once('message', resolve));
    await next();
    const model = createModel({ kind: 'lr', features: mixedSpec });
    const batch = model.encode(mixedExamples(4));
    const reply = next();
    worker.postMessage({ batch, rows: [new Float32Array(1)] });
    expect(await reply).toMatchObject({ error: { code: 'WRONG_LENGTH' } });
  });
});
