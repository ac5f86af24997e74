import type { NatsConnection } from 'nats';
import type { ModelConfigInput } from '@freshet/model';
import { publishExamples } from '@freshet/testkit';
import { frameEndpoint, type Endpoint } from '@freshet/nats';
import {
  decodePull,
  decodePush,
  encodePullReply,
  encodePushReply,
  subjects,
  type ModelSpec,
} from '@freshet/protocol';
import { ShardCore } from '@freshet/shard';
import type { WorkerOptionsInput } from '../src/worker-options.js';

/**
 * Real shard state (ShardCore: row store, optimizers, staleness, idempotent push ids) behind
 * real NATS endpoints, in process, so tests can take a shard down, hold its replies and count
 * exactly what was applied.
 */
export class ShardHarness {
  readonly cores: ShardCore[];
  private readonly eps: { pull?: Endpoint; push?: Endpoint }[] = [];
  /** Per shard: examples applied through the dense table it owns (sum of dense counts). */
  readonly denseExamples: number[];
  readonly applied: number[];
  readonly duplicates: number[];
  readonly lrScales: number[] = [];
  /** When set, push replies wait for it (the push is applied first, as a shard would log it). */
  hold: Promise<void> | undefined;
  /** Hears every push a shard applied (not duplicates). */
  onApplied: ((req: ReturnType<typeof decodePush>, shard: number) => void) | undefined;

  constructor(
    private readonly nc: NatsConnection,
    private readonly cluster: string,
    private readonly spec: ModelSpec,
    readonly shards: number,
  ) {
    this.cores = Array.from({ length: shards }, (_, shard) => testCore(spec, shards, shard));
    this.denseExamples = new Array<number>(shards).fill(0);
    this.applied = new Array<number>(shards).fill(0);
    this.duplicates = new Array<number>(shards).fill(0);
  }

  startAll(): void {
    for (let i = 0; i < this.shards; i++) this.start(i);
  }

  start(i: number): void {
    const s = subjects(this.cluster);
    const core = this.cores[i]!;
    this.eps[i] = {
      pull: frameEndpoint(this.nc, s.pull(i), (data) => encodePullReply(core.pull(decodePull(data)))),
      push: frameEndpoint(this.nc, s.push(i), async (data) => {
        const req = decodePush(data);
        const before = core.appliedVersion(req.id);
        if (before !== undefined) {
          this.duplicates[i]!++;
          return encodePushReply({ version: core.version, staleness: 0, applied: 0, duplicate: true });
        }
        const r = core.applyPush(req, Date.now());
        this.applied[i]!++;
        this.onApplied?.(req, i);
        this.lrScales.push(req.lrScale ?? 1);
        for (const t of req.tables) {
          if (this.spec.tables[t.t]?.kind === 'dense') this.denseExamples[i]! += t.counts[0]!;
        }
        if (this.hold) await this.hold;
        return encodePushReply({
          version: r.version,
          staleness: r.tau,
          applied: r.applied,
          duplicate: false,
          ...(req.add && r.densePrev.length > 0 ? { prev: r.densePrev } : {}),
        });
      }),
    };
  }

  async stop(i: number): Promise<void> {
    const e = this.eps[i];
    this.eps[i] = {};
    await e?.pull?.drain();
    await e?.push?.drain();
  }

  async stopAll(): Promise<void> {
    for (let i = 0; i < this.shards; i++) await this.stop(i);
  }

  /** Examples applied exactly once per dense-table push across shards. */
  get examplesApplied(): number {
    return this.denseExamples.reduce((a, b) => a + b, 0);
  }
}

/** One in-process shard of `spec` with roomy limits, as the harness runs them. */
export function testCore(spec: ModelSpec, shards = 1, shard = 0): ShardCore {
  return new ShardCore({
    spec,
    shard,
    shards,
    checkOwnership: true,
    maxPushRows: 1 << 20,
    maxPullKeys: 1 << 20,
    sketchWidth: 1 << 10,
    recentPushIds: 100_000,
    dcMaxWorkers: 4,
    dcMaxRowsPerWorker: 1 << 12,
  });
}

/** The small logistic-regression model the worker tests train (user, item, one numeric). */
export const lrTestModel = {
  kind: 'lr' as const,
  features: {
    fields: [
      { kind: 'categorical' as const, name: 'user' },
      { kind: 'categorical' as const, name: 'item' },
      { kind: 'numeric' as const, name: 'x' },
    ],
  },
  optimizer: { kind: 'adam' as const, lr: 0.05 },
};

/** A small wide&deep on user and item (embedding dim 4, one hidden layer of 8). */
export const wideDeepTestModel = (
  optimizer?: ModelConfigInput['optimizer'],
  extra: Partial<ModelConfigInput> = {},
): ModelConfigInput => ({
  kind: 'wide-deep',
  features: {
    fields: [
      { kind: 'categorical', name: 'user' },
      { kind: 'categorical', name: 'item' },
    ],
  },
  embeddingDim: 4,
  hidden: [8],
  ...(optimizer ? { optimizer } : {}),
  ...extra,
});

/**
 * Publishes `n` examples of a learnable user × item pattern (10 users, 4 items: even users click
 * items 0–1, odd users items 2–3) in bursts of 32 over 2 partitions.
 */
export async function publishUserItemPattern(nc: NatsConnection, cluster: string, n: number): Promise<void> {
  const item = (k: number) => `i${(k * 3) % 4}`;
  const label = (k: number) => (((k % 10) % 2 === 0) === (k * 3) % 4 < 2 ? 1 : 0);
  for (let k = 0; k < n; k += 32) {
    await publishExamples(nc, cluster, k, 32, 2, {
      user: (i) => `u${i % 10}`,
      label,
      features: (i, u) => ({ user: u, item: item(i) }),
    });
    await new Promise((r) => setTimeout(r, 20));
  }
}

/**
 * A small worker's options against a harness of 2 shards and the 2 partitions
 * {@link publishUserItemPattern} fills: batches of 16 (10 ms), one compute thread, then `extra`.
 */
export function smallWorkerOptions(
  cluster: string,
  model: ModelConfigInput,
  extra: Partial<WorkerOptionsInput> = {},
): WorkerOptionsInput {
  return {
    cluster,
    model,
    shards: 2,
    partitions: 2,
    batch: { size: 16, maxWaitMs: 10 },
    compute: { threads: 1 },
    ...extra,
  };
}
