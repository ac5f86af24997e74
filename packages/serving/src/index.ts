export {
  ServingNode,
  startServing,
  type ServingState,
  type ServingStatus,
  type ServingLog,
  type ServingNodeDeps,
} from './serving-node.js';
export {
  servingOptionsSchema,
  compileServingOptions,
  type ServingOptions,
  type ServingOptionsInput,
} from './serving-options.js';
export {
  apiSchemas,
  fastRequestCheck,
  scoreResponseSchema,
  rankResponseSchema,
  errorResponseSchema,
  type ScoreRequest,
  type RankRequest,
  type Candidate,
  type ScoreResponse,
  type RankResponse,
  type ErrorResponse,
} from './api-schemas.js';
export {
  Replica,
  type ReplicaOptions,
  type ReplicaEvent,
  type ReplicaState,
  type ReplicaStats,
} from './replica.js';
export { RowTable } from './row-table.js';
export { LogHistogram, WindowedHistogram } from './histogram.js';
export { RateMeter } from './rate-meter.js';
export { FastWideDeep, type GemmKind, type ParamSource } from './fast-wide-deep.js';
export { RequestEncoder } from './request-encoder.js';
export {
  createScorer,
  requestExamples,
  replicaParams,
  batchRows,
  type Scorer,
  type ScorerKind,
} from './scorer.js';
export { explorationSchema, exploreRanking, type Exploration, type ExploredRanking } from './exploration.js';
export {
  ModelPinFollower,
  modelPinKey,
  modelPinSchema,
  type ModelPin,
  type ModelPinFollowerOptions,
} from './model-pin.js';
export { userPoint, pickCanary } from './user-split.js';
export { Variant, variantSchema, type VariantOptions, type VariantStatus } from './variants.js';
export { SlicedRows, type GatheredRows, type SlicedRowsOptions } from './sliced-rows.js';
export { serveSliceRows, type SliceServerOptions } from './slice-server.js';
