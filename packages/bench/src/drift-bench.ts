import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SyntheticWorld, type SyntheticExample } from '@freshet/client';
import type { ModelConfigInput } from '@freshet/model';
import { driftMetrics, type DriftMetrics } from './drift-metrics.js';
import { trainOnline } from './online-trainer.js';
import { runTorchPeer } from './torch-peer.js';

/** Options of {@link runDriftBench} (`freshet bench drift`). */
export interface DriftBenchOptions {
  seed?: number;
  users?: number;
  items?: number;
  /** Requests of the stream (each shows `slate` items: one labelled example per item). */
  requests?: number;
  slate?: number;
  /** Share of users whose taste flips at the midpoint. */
  driftFraction?: number;
  batch?: number;
  lr?: number;
  dim?: number;
  /** Rolling AUC window (examples). */
  window?: number;
  threads?: number;
  /** Run the PyTorch peer in the same call (default true). */
  torch?: boolean;
}

/** The fields of a synthetic example, in the order the peer's TSV lists them. */
const FIELDS = ['user', 'item', 'category', 'position'] as const;

/** The peer's model exactly: FM on user, item, category, position; Adam; N(0, 0.01) embeddings. */
export function driftPeerModel(o: { dim: number; lr: number; seed: number }): ModelConfigInput {
  return {
    name: 'drift-fm',
    kind: 'fm',
    features: { fields: FIELDS.map((name) => ({ kind: 'categorical' as const, name })) },
    embeddingDim: o.dim,
    embeddingInit: { kind: 'normal', std: 0.01, seed: o.seed },
    optimizer: { kind: 'adam', lr: o.lr },
  };
}

/**
 * `bench drift`: a synthetic world whose users flip taste halfway through. Freshet's in-process
 * trainer (the worker's compute path and a shard's optimizers) on the peer's exact model, with
 * and without the worker's drift detector, against the PyTorch FM peer on the same examples in
 * the same order, same batch and learning rate. For each: AUC before the drift, the worst
 * window after it, examples until a window wholly after the drift is back within 0.02 of the
 * pre-drift AUC, and the final AUC.
 */
export async function runDriftBench(opts: DriftBenchOptions = {}): Promise<Record<string, unknown>> {
  const seed = opts.seed ?? 1;
  const requests = opts.requests ?? 24_000;
  const slate = opts.slate ?? 5;
  const batch = opts.batch ?? 32;
  const lr = opts.lr ?? 0.01;
  const dim = opts.dim ?? 8;
  const window = opts.window ?? 4000;
  const startTs = Date.UTC(2024, 0, 1);
  const intervalMs = 100;
  const world = new SyntheticWorld({
    seed,
    users: opts.users ?? 200,
    items: opts.items ?? 100,
    slate,
    requests,
    startTs,
    intervalMs,
    driftAtTs: startTs + Math.floor(requests / 2) * intervalMs,
    driftFraction: opts.driftFraction ?? 0.5,
    driftMode: 'flip',
  });
  const examples: SyntheticExample[] = [...world.labelled()];
  const driftAt = examples.findIndex((e) => e.ts >= world.o.driftAtTs);
  const metrics = (preds: ArrayLike<number>, labels: ArrayLike<number>): DriftMetrics =>
    driftMetrics(preds, labels, driftAt, { window });
  const labels = Float32Array.from(examples, (e) => e.label);
  const model = driftPeerModel({ dim, lr, seed });

  const run = async (lrOpts: Parameters<typeof trainOnline>[0]['lr']) => {
    const r = await trainOnline({ model, examples, batch, threads: opts.threads ?? 2, lr: lrOpts });
    return {
      ...metrics(r.preds, r.labels),
      examples_per_s: Math.round(r.examples / r.seconds),
      drift_alarms: r.schedule.drifts,
      backend: r.backend,
    };
  };
  // The peer's setting: a constant rate, nothing but the optimizer.
  const constant = await run({ plateau: { enabled: false }, drift: { enabled: false } });
  // The worker's defaults: plateau rule and drift detector on.
  const withDefaults = await run(undefined);

  const out: Record<string, unknown> = {
    bench: 'drift',
    world: {
      seed,
      users: world.o.users,
      items: world.o.items,
      requests,
      slate,
      drift_fraction: world.o.driftFraction,
      drift_mode: 'flip',
    },
    examples: examples.length,
    drift_at: driftAt,
    model: 'fm (user, item, category, position)',
    batch,
    lr,
    dim,
    window,
    freshet_peer_model: constant,
    freshet_default_schedule: withDefaults,
  };
  if (opts.torch === false) return out;
  const dir = await mkdtemp(join(tmpdir(), 'freshet-drift-'));
  try {
    const data = join(dir, 'drift.tsv');
    const lines = ['label\t' + FIELDS.join('\t')];
    for (const e of examples) lines.push(`${e.label}\t${FIELDS.map((f) => e.features[f]).join('\t')}`);
    await writeFile(data, lines.join('\n') + '\n');
    const predsFile = join(dir, 'preds.txt');
    const peer = await runTorchPeer('torch_online_fm.py', [
      data,
      predsFile,
      String(batch),
      String(lr),
      String(dim),
      '0.01',
      String(opts.threads ?? 2),
    ]);
    if (!peer.ok) out.torch = { peer: peer.peer };
    else {
      const preds = (await readFile(predsFile, 'utf8')).trim().split('\n').map(Number);
      out.torch = { ...peer.json, ...metrics(preds, labels) };
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
  return out;
}
