import { Piscina } from 'piscina';
import {
  batchTransferList,
  type BackendPreference,
  type BatchRows,
  type EncodedBatch,
  type GradientResult,
} from '@freshet/model';
import { threadEntry } from '@freshet/nats';
import { FreshetError } from '@freshet/protocol';
import type { ComputeReply, ComputeTask, ComputeThreadData } from './compute-thread.js';

export interface ComputePoolOptions {
  /** Model config (as for @freshet/model's createModel); every thread builds the same model. */
  model: unknown;
  threads: number;
  /** Tasks waiting beyond the busy threads; one more is OVERLOADED. */
  maxQueue: number;
  backend?: BackendPreference;
}

/** Where the compiled thread body lives (tests run src/ through vitest; threads need dist/). */
const threadFile = () => threadEntry(import.meta.url, 'compute-thread.js', '@freshet/worker');

/** Every distinct ArrayBuffer among the rows that may be moved to a thread (not shared caches). */
function rowsTransferList(rows: BatchRows, keep: ReadonlySet<number>): ArrayBuffer[] {
  const out = new Set<ArrayBuffer>();
  rows.forEach((r, t) => {
    if (r && !keep.has(t) && r.buffer instanceof ArrayBuffer && r.byteLength === r.buffer.byteLength)
      out.add(r.buffer);
  });
  return [...out];
}

/**
 * A bounded pool of gradient threads (piscina). Each thread runs its own model backend; batches
 * and rows are transferred in, predictions and gradients transferred back. A full queue is an
 * OVERLOADED FreshetError, never unbounded memory.
 */
export class ComputePool {
  private readonly pool: Piscina;
  private backendInfo: { backend: string; simd?: boolean | undefined } | undefined;
  private closed = false;

  private constructor(o: ComputePoolOptions) {
    const data: ComputeThreadData = { model: o.model, backend: o.backend ?? 'auto' };
    this.pool = new Piscina({
      filename: threadFile(),
      minThreads: o.threads,
      maxThreads: o.threads,
      maxQueue: o.maxQueue,
      idleTimeout: 2 ** 31 - 1,
      workerData: data,
    });
  }

  /** Starts the threads and waits until each has its backend and model ready. */
  static async create(o: ComputePoolOptions): Promise<ComputePool> {
    const p = new ComputePool(o);
    try {
      // one init per thread: piscina hands concurrent tasks to distinct idle threads
      const infos = await Promise.all(Array.from({ length: o.threads }, () => p.exec({ op: 'init' })));
      const first = infos[0];
      if (first?.ok && first.op === 'init') p.backendInfo = { backend: first.backend, simd: first.simd };
    } catch (e) {
      await p.close();
      throw e;
    }
    return p;
  }

  /** The model backend the threads run (`tensorflow`, `wasm`, `cpu`). */
  get backend(): string {
    return this.backendInfo?.backend ?? 'unknown';
  }
  get simd(): boolean | undefined {
    return this.backendInfo?.simd;
  }
  /** Tasks waiting for a thread. */
  get queued(): number {
    return this.pool.queueSize;
  }
  get threads(): number {
    return this.pool.threads.length;
  }

  /**
   * Scores the batch with the current rows, then returns the gradients. The batch's and the rows'
   * buffers are transferred (unusable here afterwards) except rows of tables in `keep`.
   */
  async gradients(
    batch: EncodedBatch,
    rows: BatchRows,
    keep: ReadonlySet<number> = new Set(),
  ): Promise<GradientResult & { ms: number }> {
    const r = await this.exec({ op: 'grad', batch, rows }, [
      ...batchTransferList(batch),
      ...rowsTransferList(rows, keep),
    ]);
    if (r.ok && r.op === 'grad') return { preds: r.preds, loss: r.loss, grads: r.grads, ms: r.ms };
    throw new FreshetError('INTERNAL', 'unexpected compute reply');
  }

  /** Predictions only (no gradients). Buffers are transferred as in {@link gradients}. */
  async predict(
    batch: EncodedBatch,
    rows: BatchRows,
    keep: ReadonlySet<number> = new Set(),
  ): Promise<Float32Array> {
    const r = await this.exec({ op: 'predict', batch, rows }, [
      ...batchTransferList(batch),
      ...rowsTransferList(rows, keep),
    ]);
    if (r.ok && r.op === 'predict') return r.preds;
    throw new FreshetError('INTERNAL', 'unexpected compute reply');
  }

  private async exec(task: ComputeTask, transferList: ArrayBuffer[] = []): Promise<ComputeReply> {
    if (this.closed) throw new FreshetError('SHUTTING_DOWN', 'compute pool closed');
    let r: ComputeReply;
    try {
      r = (await this.pool.run(task, { transferList: [...new Set(transferList)] })) as ComputeReply;
    } catch (e) {
      const msg = (e as Error)?.message ?? String(e);
      if (/queue is at limit|No task queue available/i.test(msg)) {
        throw new FreshetError('OVERLOADED', `compute queue full (${this.pool.queueSize} waiting)`);
      }
      throw new FreshetError('INTERNAL', `compute thread: ${msg}`, { cause: e });
    }
    if (!r.ok) throw FreshetError.fromEnvelope(r.error);
    return r;
  }

  /** Waits for running tasks, then stops the threads. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.pool.close();
  }
}
