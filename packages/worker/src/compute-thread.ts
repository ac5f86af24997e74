/**
 * The piscina thread body: each thread starts its own TensorFlow.js backend (its own wasm
 * instance; wasm threads do not work in Node) and builds the model once, then runs batches.
 * Results travel back with their buffers transferred, not copied.
 */
import { workerData } from 'node:worker_threads';
import { move, transferableSymbol, valueSymbol } from 'piscina';
import {
  computeGradients,
  createModel,
  initBackend,
  predict,
  type BackendPreference,
  type BatchRows,
  type EncodedBatch,
  type Model,
} from '@freshet/model';
import { FreshetError, toErrorEnvelope, type ErrorEnvelope } from '@freshet/protocol';

/** What the pool passes each thread at start. */
export interface ComputeThreadData {
  model: unknown;
  backend: BackendPreference;
}

export type ComputeTask =
  | { op: 'init' }
  | { op: 'grad'; batch: EncodedBatch; rows: BatchRows }
  | { op: 'predict'; batch: EncodedBatch; rows: BatchRows };

export type ComputeReply =
  | { ok: true; op: 'init'; backend: string; simd?: boolean | undefined; threadId: number }
  | {
      ok: true;
      op: 'grad';
      preds: Float32Array;
      loss: number;
      grads: (Float32Array | undefined)[];
      ms: number;
    }
  | { ok: true; op: 'predict'; preds: Float32Array; ms: number }
  | { ok: false; error: ErrorEnvelope };

const data = workerData as ComputeThreadData;
let ready: Promise<{ model: Model; backend: string; simd?: boolean | undefined }> | undefined;

/** Transfers only arrays that own their whole buffer: a view into a pooled buffer is copied. */
function moved(value: ComputeReply, arrays: Float32Array[]): unknown {
  const unique = [
    ...new Set(
      arrays.filter((a) => a.byteOffset === 0 && a.byteLength === a.buffer.byteLength).map((a) => a.buffer),
    ),
  ].filter((b) => b instanceof ArrayBuffer);
  return move({
    get [transferableSymbol]() {
      return unique;
    },
    get [valueSymbol]() {
      return value;
    },
  } as never);
}

/** Errors cross the thread boundary as envelopes so the pool rethrows them with their code. */
export default async function run(task: ComputeTask): Promise<unknown> {
  try {
    ready ??= initBackend(data.backend).then((info) => ({
      model: createModel(data.model as never),
      backend: info.backend,
      simd: info.simd,
    }));
    const { model, backend, simd } = await ready;
    const t0 = performance.now();
    switch (task.op) {
      case 'init': {
        const { threadId } = await import('node:worker_threads');
        return { ok: true, op: 'init', backend, simd, threadId } satisfies ComputeReply;
      }
      case 'grad': {
        const r = computeGradients(model, task.batch, task.rows);
        const reply: ComputeReply = {
          ok: true,
          op: 'grad',
          preds: r.preds,
          loss: r.loss,
          grads: r.grads,
          ms: performance.now() - t0,
        };
        return moved(reply, [r.preds, ...r.grads.filter((g) => g !== undefined)]);
      }
      case 'predict': {
        const preds = predict(model, task.batch, task.rows);
        return moved({ ok: true, op: 'predict', preds, ms: performance.now() - t0 }, [preds]);
      }
      default:
        throw new FreshetError('BAD_REQUEST', 'unknown compute op');
    }
  } catch (e) {
    return { ok: false, error: toErrorEnvelope(e) } satisfies ComputeReply;
  }
}
