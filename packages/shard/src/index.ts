export { RowStore, MAX_ROWS, META_WORDS, TICK_MS, tickOf, type RowStoreOptions } from './row-store.js';
export { AdmissionSketch } from './admission.js';
export { TauHistogram, TAU_BUCKET_BOUNDS, DcBackups, SspGate, stalenessScale } from './staleness.js';
export { ParamTable } from './param-table.js';
export { ShardCore, type ShardCoreOptions, type ApplyResult, type ReplayInfo } from './shard-core.js';
export {
  Wal,
  replayWal,
  truncateWal,
  decodeSegment,
  listSegments,
  walSegmentFileName,
  type WalRecord,
  type WalStats,
} from './wal.js';
export {
  captureCheckpoint,
  beginCheckpoint,
  writeCheckpoint,
  loadCheckpoint,
  parseCheckpoint,
  installCheckpoint,
  installFile,
  listCheckpoints,
  checkpointFileName,
  type CheckpointCapture,
  type CheckpointHeader,
  type PendingCheckpoint,
  type RestoredCheckpoint,
} from './checkpoint.js';
export {
  DirCheckpointStore,
  CheckpointUploader,
  restoreFromStore,
  type FetchedFromStore,
  type StoredSegment,
  verifyCheckpoint,
  isFreshDataDir,
  RESTORE_MARKER,
  sha256Hex,
  type CheckpointStore,
  type StoredCheckpoint,
  type UploadStats,
} from './checkpoint-store.js';
export {
  ObjectStoreCheckpoints,
  ObjectBucket,
  checkpointObjectName,
  segmentObjectName,
  describeSegmentObject,
  listCheckpointObjects,
  listBucketCheckpoints,
  describeObject,
  type CheckpointObject,
  type ObjectRecord,
  type ObjectStoreCheckpointsOptions,
} from './object-store-checkpoints.js';
export {
  shardOptionsSchema,
  shardCheckpointSchema,
  shardLimitsSchema,
  compileShardOptions,
  deltaIntervalOf,
  type ShardOptions,
  type ShardOptionsInput,
} from './shard-options.js';
export { DeltaPublisher } from './delta-publisher.js';
export { Shard, aligned, startShard, type ShardState, type ShardDeps, type RestoreInfo } from './shard.js';
export type { HostedShard } from './hosted-shard.js';
export { ShardThreads } from './shard-threads.js';
export { ThreadShard } from './thread-shard.js';
export { HandOffs, type GroupedReply, type PartGroup, type RoutedReply } from './part-calls.js';
export {
  ShardHost,
  shardHostOptionsSchema,
  compileShardHostOptions,
  type ShardHostOptions,
  type ShardHostOptionsInput,
  type ShardHostHooks,
  type ShardHostDeps,
  type ShardHostStatus,
} from './shard-host.js';
export { userKeys, forgetPlan, type ForgetTable } from './forget.js';
