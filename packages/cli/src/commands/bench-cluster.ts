import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { FreshetError } from '@freshet/protocol';
import { Command, InvalidArgumentError, Option } from 'commander';
import { intList, nonNegativeInt as int, positiveNumber as num, repoRoot } from '../cli-args.js';
import { resolveDataRef } from '../data-ref.js';
import { busInput, withBusFlags, type BusFlags } from './bus-flags.js';

/**
 * `freshet bench cluster` and `freshet bench scaling`: one JSON line each on stdout, progress on
 * stderr. `--save` also writes the result to bench/results/<name>.json in the repository, so a
 * change shows up as a diff of the kept results.
 */
async function emit(result: Record<string, unknown>, save: string | boolean | undefined, name: string) {
  process.stdout.write(JSON.stringify(result) + '\n');
  if (save === undefined || save === false) return;
  const file = join(repoRoot(), 'bench', 'results', `${typeof save === 'string' ? save : name}.json`);
  await mkdir(dirname(file), { recursive: true });
  await writeFile(file, JSON.stringify(result, null, 2) + '\n');
  process.stderr.write(`saved ${file}\n`);
}

const progress = (line: string) => process.stderr.write(`[bench] ${line}\n`);

interface ClusterFlags extends BusFlags {
  data: string;
  spec?: string;
  seed: number;
  dim: number;
  window?: number;
  shards: number;
  shardHosts?: number;
  shardThreads?: number;
  placements?: number[];
  workers: number;
  serving: number;
  servingSlices?: number;
  rate?: number;
  passes: number;
  limit?: number;
  partitions: number;
  model: string;
  batch: number;
  sync?: boolean;
  backlog?: boolean;
  inFlight?: number;
  overlapPush: boolean;
  lr: number;
  threads?: number;
  tap: boolean;
  peer: boolean;
  peerInit: 'freshet' | 'pytorch';
  save?: string | boolean;
}

/**
 * `--peer-init`: where the Criteo PyTorch peer's initial weights come from. Freshet's by default,
 * so a run compares how the two train from one starting point (the spread between seeds is
 * larger than the difference between the two learners); `pytorch` keeps the peer's own.
 */
export function peerInitOption(): Option {
  return new Option(
    '--peer-init <from>',
    "the Criteo peer's initial weights: freshet (the ones this model and seed start from here) or pytorch (its own)",
  )
    .choices(['freshet', 'pytorch'])
    .default('freshet');
}

/** `freshet bench cluster --data REF --shards S --workers W --serving N [--rate R] [--passes P] --json`. */
export function clusterBenchCommand(): Command {
  return withBusFlags(
    new Command('cluster')
      .description(
        'a real local cluster learns any dataset `replay` reads, end to end; vs the PyTorch peer where one exists',
      )
      .requiredOption(
        '--data <ref>',
        'criteo:PATH | movielens:PATH | obd:PATH | csv:PATH (with --spec) | synthetic[:k=v,...]',
      )
      .option('--spec <file>', 'column mapping for csv: data (JSON; see packages/client/README.md)')
      .option('--shards <n>', 'shards', int, 2)
      .option('--shard-hosts <n>', 'run the shards on this many shard hosts (docs/resharding.md)', int)
      .option('--shard-threads <n>', 'shard threads per shard host (needs --shard-hosts)', int)
      .option(
        '--placements <list>',
        'host counts the shards move over at equal steps of the run, e.g. 2,4,2 (needs --shard-hosts)',
        (v) => intList(v, 1),
      )
      .option('--workers <n>', 'worker processes', int, 1)
      .option('--serving <n>', 'serving processes', int, 1)
      .option('--serving-slices <n>', 'sliced serving: node i holds slice i mod n of the shards', int)
      .option(
        '--rate <r>',
        'events/s (default: as fast as the cluster learns, then 70% of it for freshness)',
        num,
      )
      .option(
        '--backlog',
        'publish the data first, then start the workers and time them (like for like with the peer, ' +
          'which trains from parsed data in memory)',
      )
      .option('--passes <n>', 'passes over the data', int, 1)
      .option('--limit <n>', 'only the first n examples', int)
      .option('--partitions <n>', 'feedback stream partitions', int, 8)
      .option(
        '--model <kind>',
        'lr | fm | wide-deep | deepfm | two-tower | seed | wide-deep-peer (Criteo: all-Adam, as the PyTorch peer) | ' +
          'lr-ftrl (lr with sequential FTRL, vs per-example FTRL-Proximal)',
        'wide-deep',
      )
      .option('--seed <n>', 'seed of the embedding and dense initialisation', int, 0)
      .option('--dim <n>', 'embedding width of models on non-Criteo data', int, 8)
      .option(
        '--window <n>',
        "each worker's rolling window (examples); adds the merged window AUC to the JSON",
        int,
      )
      .option('--batch <n>', 'worker batch size (with --sync the global one: batch/workers each)', int, 256)
      .option('--sync', 'synchronous steps: the model staleness policy sync (docs/learning-quality.md)')
      .option(
        '--in-flight <n>',
        "batches each worker keeps in flight before their push is sent (default: the worker's, 1)",
        int,
      )
      .option(
        '--no-overlap-push',
        "start the next batch only once a push is answered (the worker's overlapPush off; it is on by default)",
      )
      .option('--lr <x>', 'Adam learning rate (both sides)', num, 3e-3)
      .option('--threads <n>', 'compute threads per worker', int)
      .option('--no-tap', 'do not observe pull/push/delta traffic on the bus')
      .option('--no-peer', 'skip the PyTorch peer')
      .addOption(peerInitOption())
      .option('--save [name]', 'also write bench/results/<name>.json (default cluster-s<S>-w<W>-n<N>)'),
  )
    .option('--json', 'print one JSON line (the default output)')
    .action(async (o: ClusterFlags) => {
      const { runClusterBench, isBenchModel, benchModels } = await import('@freshet/bench');
      const model = o.model;
      if (!isBenchModel(model)) throw new InvalidArgumentError(`--model ${benchModels.join('|')}`);
      const { localClusterHarness } = await import('../bench-harness.js');
      const r = await runClusterBench(
        {
          data: resolveDataRef(o.data, process.env),
          shards: o.shards,
          ...(o.shardHosts !== undefined ? { shardHosts: o.shardHosts } : {}),
          ...(o.shardThreads !== undefined ? { shardThreads: o.shardThreads } : {}),
          ...(o.placements !== undefined ? { placements: o.placements } : {}),
          workers: o.workers,
          serving: o.serving,
          ...(o.servingSlices !== undefined ? { servingSlices: o.servingSlices } : {}),
          passes: o.passes,
          partitions: o.partitions,
          model,
          seed: o.seed,
          dim: o.dim,
          batch: o.batch,
          sync: o.sync === true,
          backlog: o.backlog === true,
          ...(o.inFlight !== undefined ? { inFlight: o.inFlight } : {}),
          ...(o.overlapPush === false ? { overlapPush: false } : {}),
          lr: o.lr,
          ...busInput(o),
          tap: o.tap,
          peer: o.peer,
          peerInit: o.peerInit,
          ...(o.rate !== undefined ? { rate: o.rate } : {}),
          ...(o.limit !== undefined ? { limit: o.limit } : {}),
          ...(o.threads !== undefined ? { threads: o.threads } : {}),
          ...(o.spec !== undefined ? { spec: o.spec } : {}),
          ...(o.window !== undefined ? { window: o.window } : {}),
        },
        { progress, harness: localClusterHarness() },
      );
      await emit(r, o.save, `cluster-s${o.shards}-w${o.workers}-n${o.serving}`);
    });
}

/** A result JSON file; CONFIG naming the option when it is unreadable or not JSON. */
async function readResult(file: string, option: string): Promise<unknown> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (e) {
    throw new FreshetError('CONFIG', `${option} ${file}: ${(e as Error).message}`);
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new FreshetError('CONFIG', `${option} ${file}: not JSON (${(e as Error).message})`);
  }
}

/** The kept result of `bench cluster` on this machine that `bench scaling` calibrates against by default. */
const defaultCalibration = join('bench', 'results', 'cluster-s2-w1-n1.json');

/**
 * `freshet bench scaling --data criteo:PATH [--calibrate-with FILE]`: measured costs → the local
 * cluster of a `bench cluster` result predicted and compared (calibration_error) → simulated
 * 10/100/1000-machine clusters per design.
 */
export function scalingBenchCommand(): Command {
  return new Command('scaling')
    .description(
      'measure per-message/per-row costs here, check the model against a measured local cluster, ' +
        'and simulate clusters of 10, 100 and 1000 machines',
    )
    .requiredOption('--data <ref>', 'criteo:PATH (key statistics)')
    .option('--machines <list>', 'comma-separated cluster sizes', '10,100,1000')
    .option('--designs <list>', 'comma-separated design keys to simulate (default: every design)')
    .option('--cores <n>', 'cores per simulated machine', int, 16)
    .option(
      '--calibrate-with <file>',
      `a bench cluster result JSON measured on this machine (default ${defaultCalibration} when present)`,
    )
    .option(
      '--held-out <files...>',
      'more bench cluster results (other layouts or options) predicted with the fitted multipliers: ' +
        'calibration_error is the worst of them',
    )
    .option('--no-calibrate', 'skip the calibration')
    .option('--save [name]', 'also write bench/results/<name>.json (default scaling)')
    .option('--json', 'print one JSON line (the default output)')
    .action(
      async (o: {
        data: string;
        machines: string;
        designs?: string;
        cores: number;
        calibrateWith?: string;
        heldOut?: string[];
        calibrate: boolean;
        save?: string | boolean;
      }) => {
        const machines = o.machines.split(',').map((x) => int(x.trim()));
        let calibrateWith: unknown;
        if (o.calibrate) {
          const file = o.calibrateWith ?? join(repoRoot(), defaultCalibration);
          if (o.calibrateWith !== undefined || existsSync(file))
            calibrateWith = await readResult(file, '--calibrate-with');
          else progress(`no ${defaultCalibration}: no calibration (run bench cluster --save first)`);
        }
        const heldOut: unknown[] = [];
        for (const file of o.calibrate ? (o.heldOut ?? []) : [])
          heldOut.push(await readResult(file, '--held-out'));
        const r = await (
          await import('@freshet/bench')
        ).runScalingModel({
          data: resolveDataRef(o.data, process.env),
          machines,
          ...(o.designs !== undefined ? { designs: o.designs.split(',').map((x) => x.trim()) } : {}),
          coresPerMachine: o.cores,
          progress,
          ...(calibrateWith !== undefined ? { calibrateWith } : {}),
          ...(heldOut.length ? { heldOut } : {}),
        });
        await emit(r, o.save, 'scaling');
      },
    );
}
