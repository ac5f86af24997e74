import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseCriteoLine } from '@freshet/model';
import { exactAuc, logloss } from '@freshet/worker';
import type { BenchData } from './bench-data.js';
import { optimizerSchema } from '@freshet/protocol';
import { benchModelConfig, type BenchModel } from './bench-models.js';
import { peerInitGap, writePeerInit } from './peer-init.js';
import { lrSparseVectors, sequentialFtrl } from './sequential-ftrl.js';
import { runTorchPeer } from './torch-peer.js';

/**
 * Which PyTorch peer (bench/peers/) a bench run is compared with, and running it. A peer runs only
 * where it is the same model on the same examples: the Criteo wide&deep (`torch_online.py`) for
 * the Criteo models, the FM (`torch_online_fm.py`) for an `fm` on categorical fields. Anywhere
 * else the result says `unavailable: <why>`, so a missing comparison is never silent.
 */

/** The settings both sides run with. */
export interface PeerRunOptions {
  model: BenchModel;
  data: BenchData;
  batch: number;
  lr: number;
  passes: number;
  threads: number;
  seed: number;
  /** Embedding width of the FM. */
  dim: number;
  /** Per-table or other config overrides: the peer has none of them. */
  overridden: boolean;
  /**
   * Where the Criteo peer's initial weights come from: `freshet` (default) the ones a fresh
   * Freshet cluster of this model and seed starts from (peer-init.ts), `pytorch` its own.
   */
  peerInit?: PeerInit;
}

/** See {@link PeerRunOptions.peerInit}. */
export const peerInits = ['freshet', 'pytorch'] as const;
export type PeerInit = (typeof peerInits)[number];

/** The first `n` lines of a Criteo file that are examples, in a temporary file the caller removes. */
async function criteoHead(path: string, n: number, dir: string): Promise<string> {
  const out: string[] = [];
  for (const line of (await readFile(path, 'utf8')).split('\n')) {
    if (out.length >= n) break;
    if (parseCriteoLine(line)) out.push(line);
  }
  const file = join(dir, 'head.tsv');
  await writeFile(file, out.join('\n') + '\n');
  return file;
}

/** What the peer did: its JSON line (plus AUC/logloss of its predictions when it wrote them). */
export type PeerRun =
  { ok: true; peer: string; exact: boolean; json: Record<string, unknown> } | { ok: false; peer: string };

const criteoModels: ReadonlySet<BenchModel> = new Set(['wide-deep', 'wide-deep-peer', 'deepfm']);
const r4 = (x: number) => Math.round(x * 10_000) / 10_000;

/** Why the FM peer cannot run this model on these examples, or undefined when it can. */
function fmPeerGap(o: PeerRunOptions): string | undefined {
  if (o.passes !== 1) return 'torch_online_fm.py makes one pass';
  if (o.overridden) return 'the config overrides have no PyTorch counterpart';
  const names = o.data.fields.map((f) => f.name);
  const other = o.data.fields.find((f) => f.kind !== 'categorical');
  if (other) return `torch_online_fm.py takes categorical fields only (${other.name} is ${other.kind})`;
  if (names.includes('label')) return 'a field named "label" clashes with the peer\'s label column';
  for (const ex of o.data.examples) {
    if ((ex.weight ?? 1) !== 1) return 'examples carry weights (the peer has none)';
    if (ex.label !== 0 && ex.label !== 1) return `labels are not 0/1 (${ex.label})`;
    for (const n of names) {
      const v = ex.features[n];
      // Freshet leaves a missing field's slot empty; the peer would give "missing" a row.
      if (v === undefined) return `some examples lack field ${n}`;
      if (/[\t\n\r]/.test(String(v))) return `a value of ${n} holds a tab or newline`;
    }
  }
  return undefined;
}

/**
 * The peer of `lr-ftrl`: per-example FTRL-Proximal from the paper ({@link sequentialFtrl}) on the
 * model's exact inputs, in the data's order; in this process, float64 (no PyTorch needed).
 */
function ftrlReference(o: PeerRunOptions): PeerRun {
  if (o.passes !== 1) return { ok: false, peer: 'unavailable: the FTRL reference makes one pass' };
  if (o.overridden)
    return { ok: false, peer: 'unavailable: the config overrides have no reference counterpart' };
  const config = benchModelConfig('lr-ftrl', o.data, { lr: o.lr, seed: o.seed });
  const opt = optimizerSchema.parse(config.optimizer);
  if (opt.kind !== 'ftrl') throw new Error('unreachable: lr-ftrl without FTRL');
  const { examples } = o.data;
  const labels = examples.map((e) => e.label);
  const weights = examples.map((e) => e.weight ?? 1);
  const t0 = performance.now();
  const { vectors, coordinates } = lrSparseVectors(config, examples, o.batch);
  const preds = sequentialFtrl(vectors, labels, coordinates, opt, weights);
  const seconds = (performance.now() - t0) / 1000;
  let ll = 0;
  for (let i = 0; i < preds.length; i++) ll += logloss(preds[i]!, labels[i]!);
  return {
    ok: true,
    peer: 'sequential FTRL-Proximal (float64, per example, from the paper)',
    exact: true,
    json: {
      examples: preds.length,
      examples_per_s: Math.round(preds.length / Math.max(seconds, 1e-9)),
      progressive_auc_pass1: r4(exactAuc(preds, labels)),
      progressive_logloss_pass1: r4(ll / Math.max(1, preds.length)),
    },
  };
}

/** Runs the peer that matches `o`, or says why there is none. Never throws. */
export async function runExactPeer(o: PeerRunOptions): Promise<PeerRun> {
  if (o.model === 'lr-ftrl') return ftrlReference(o);
  if (o.data.kind === 'criteo') {
    if (!criteoModels.has(o.model))
      return {
        ok: false,
        peer:
          `unavailable: no PyTorch peer of ${o.model} on criteo data ` +
          '(bench/peers/torch_online.py is the Criteo wide&deep: models wide-deep, wide-deep-peer, deepfm)',
      };
    // The same examples, passes, batch, threads, lr and seed; a limited run gets the file's head.
    const dir = await mkdtemp(join(tmpdir(), 'freshet-peer-criteo-'));
    let r: Awaited<ReturnType<typeof runTorchPeer>>;
    let init: string;
    try {
      const file = o.data.limited ? await criteoHead(o.data.path, o.data.events, dir) : o.data.path;
      const args = [
        file,
        String(o.passes),
        String(o.batch),
        String(o.threads),
        String(o.lr),
        String(o.seed),
        '0',
      ];
      // Overrides may change the tables; the peer then keeps its own initialisation.
      const config = o.overridden ? undefined : benchModelConfig(o.model, o.data, { lr: o.lr, seed: o.seed });
      const gap = config && peerInitGap(config);
      if ((o.peerInit ?? 'freshet') === 'pytorch') init = 'pytorch (asked for)';
      else if (!config || gap)
        init = `pytorch (${gap ?? 'the config overrides have no PyTorch counterpart'})`;
      else {
        await writePeerInit(config, o.data.examples, dir);
        args.push(dir);
        init = 'freshet';
      }
      r = await runTorchPeer('torch_online.py', args, 600_000);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
    if (!r.ok) return r;
    return {
      ok: true,
      peer: typeof r.json.peer === 'string' ? r.json.peer : 'pytorch',
      // wide-deep and deepfm are Freshet's tuned models next to the peer's wide&deep.
      exact: o.model === 'wide-deep-peer' && !o.overridden,
      json: { ...r.json, init },
    };
  }
  if (o.model !== 'fm')
    return {
      ok: false,
      peer: `unavailable: no PyTorch peer of ${o.model} on ${o.data.kind} data (bench/peers/torch_online_fm.py is an FM)`,
    };
  const gap = fmPeerGap(o);
  if (gap) return { ok: false, peer: `unavailable: ${gap}` };
  const dir = await mkdtemp(join(tmpdir(), 'freshet-peer-fm-'));
  try {
    const names = o.data.fields.map((f) => f.name);
    const lines = ['label\t' + names.join('\t')];
    for (const ex of o.data.examples)
      lines.push(`${ex.label}\t${names.map((n) => String(ex.features[n])).join('\t')}`);
    const data = join(dir, 'examples.tsv');
    const predsFile = join(dir, 'preds.txt');
    await writeFile(data, lines.join('\n') + '\n');
    const r = await runTorchPeer('torch_online_fm.py', [
      data,
      predsFile,
      String(o.batch),
      String(o.lr),
      String(o.dim),
      '0.01',
      String(o.threads),
    ]);
    if (!r.ok) return r;
    const preds = (await readFile(predsFile, 'utf8')).trim().split('\n').map(Number);
    const labels = o.data.examples.map((e) => e.label);
    let ll = 0;
    for (let i = 0; i < preds.length; i++) ll += logloss(preds[i]!, labels[i]!);
    return {
      ok: true,
      peer: typeof r.json.peer === 'string' ? r.json.peer : 'pytorch',
      exact: true,
      json: {
        ...r.json,
        progressive_auc_pass1: r4(exactAuc(preds, labels)),
        progressive_logloss_pass1: r4(ll / Math.max(1, preds.length)),
      },
    };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
