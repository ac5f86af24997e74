export {
  Worker,
  startWorker,
  type WorkerState,
  type WorkerStatus,
  type WorkerDeps,
  type JoinerStatus,
} from './worker.js';
export type { WorkerCounters } from './worker-types.js';
export { BatchTiming, type BatchTimingSnapshot, type StageTime, type Stage } from './batch-timing.js';
export {
  workerOptionsSchema,
  lrScheduleSchema,
  compileWorkerOptions,
  type WorkerOptions,
  type WorkerOptionsInput,
  type LrScheduleOptions,
} from './worker-options.js';
export { ComputePool, type ComputePoolOptions } from './compute-pool.js';
export { HostRouter, type HostRouterOptions } from './host-router.js';
export {
  ShardClient,
  allFinite,
  type ShardClientOptions,
  type BatchKeys,
  type RoutePlan,
  type PulledRows,
  type PushOutcome,
  type PushMeta,
  type OnRetry,
} from './shard-client.js';
export {
  PartitionLeases,
  desiredOwner,
  type PartitionLeaseOptions,
  type PartitionLeaseHooks,
  type LeaseCounters,
  type LeaseLossReason,
} from './partition-leases.js';
export { PullFeed, type PullFeedOptions, type PullOutcome, type PullEnd } from './pull-feed.js';
export {
  ProgressiveMetrics,
  exactAuc,
  histogramAuc,
  logloss,
  mergeProgressive,
  type ProgressiveHistogram,
  type ProgressiveSnapshot,
} from './progressive.js';
export { LrSchedule } from './lr-schedule.js';
export {
  Joiner,
  fakeNegativeWeight,
  type JoinedExample,
  type ExampleSource,
  type JoinerDropReason,
  type JoinerCounters,
  type JoinerSnapshot,
  type JoinerHooks,
} from './joiner.js';
export {
  joinerOptionsSchema,
  compileJoinerOptions,
  type JoinerOptions,
  type JoinerOptionsInput,
} from './joiner-options.js';
export { ForgottenUsers } from './forgotten-users.js';
export { ServedCtr, type ServedCounts } from './served-ctr.js';
