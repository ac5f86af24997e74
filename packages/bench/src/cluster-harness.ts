import type { NatsConnection } from 'nats';

/**
 * What the cluster bench needs from a local cluster, as an interface: launching one (config
 * compilation, processes, supervision) and reading actor status belong to `@freshet/cli`, which
 * depends on this package, so the CLI hands its launcher in (cli/src/bench-harness.ts) instead of
 * this package importing the CLI back.
 */

/** One live actor as the NATS service API reports it (cli's ActorStatus is one). */
export interface BenchActor {
  id: string;
  role: string;
  status: Record<string, unknown>;
}

/** A running local cluster. */
export interface BenchCluster<A extends BenchActor = BenchActor> {
  cluster: string;
  natsUrls: string[];
  /** An admin connection to the cluster's NATS. */
  nc: NatsConnection;
  /** The role processes it started (their pids change on restart). */
  processes: ReadonlyArray<{ role: string; id: string; pid: number }>;
  /** The embedded nats-servers. */
  natsServers: ReadonlyArray<{ pid: number }>;
  /** Every live actor now. */
  actors(): Promise<A[]>;
  /** Stops every process it started. Idempotent. */
  stop(): Promise<void>;
  /** Starts one more worker and resolves once it reports running (`bench cluster --backlog`). */
  add?(role: 'worker'): Promise<unknown>;
}

export interface HarnessStartOptions {
  /** Names the config in error messages. */
  source: string;
  /** Relative paths of the config resolve against it. */
  baseDir: string;
  signal?: AbortSignal;
  readyTimeoutMs: number;
  stopGraceMs: number;
  restartOnExit: boolean;
}

/** Launches local clusters and reads their actors' status (`@freshet/cli` implements it). */
export interface ClusterHarness<A extends BenchActor = BenchActor> {
  /** Compiles `config` (a cluster config input, as `freshet up` reads it) and starts it. */
  start(config: Record<string, unknown>, opts: HarnessStartOptions): Promise<BenchCluster<A>>;
  /** The live actors of `cluster` with one of `roles`, collected for `maxWaitMs`. */
  discover(
    nc: NatsConnection,
    opts: { cluster: string; roles: ReadonlyArray<'shard' | 'worker' | 'serving'>; maxWaitMs: number },
  ): Promise<A[]>;
  shardView(a: A): {
    rows: number | null;
    memoryBytes: number | null;
    stalenessP50: number | null;
    stalenessP99: number | null;
  };
  workerView(a: A): {
    examples: number | null;
    auc: number | null;
    logloss: number | null;
    backend: string | null;
  };
  servingView(a: A): { freshnessP50Ms: number | null; freshnessP99Ms: number | null };
  /**
   * Spreads the shards over shard hosts `h0`… `h<hosts-1>` of a cluster started with shard hosts
   * and waits until they run there (the CLI's `freshet shard place`); the shards moved and the ms.
   */
  place?(lc: BenchCluster<A>, hosts: number): Promise<{ moved: number; ms: number }>;
}
