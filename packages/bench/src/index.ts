export {
  runTrainBench,
  trainBenchModels,
  type TrainBenchModel,
  type TrainBenchOptions,
} from './train-bench.js';
export { loadBenchData, inferFields, type BenchData, type BenchDataOptions } from './bench-data.js';
export {
  benchModels,
  benchModelConfig,
  isBenchModel,
  type BenchModel,
  type BenchModelOptions,
} from './bench-models.js';
export { peerInits, runExactPeer, type PeerInit, type PeerRun, type PeerRunOptions } from './exact-peer.js';
export { peerInitGap, writePeerInit } from './peer-init.js';
export {
  runPersonalization,
  type PersonalizationOptions,
  type PersonalizationResult,
  type PersonalizationWorld,
  type UserRanking,
} from './personalization.js';
export { runIngestBench, type IngestBenchOptions } from './ingest-bench.js';
export { runShardBench, type ShardBenchOptions } from './shard-bench.js';
export { runShardNatsBench, type ShardNatsBenchOptions } from './shard-nats-bench.js';
export { runServeBench, serveBenchModelConfig, type ServeBenchOptions } from './serve-bench.js';
export { runComputeBench, type ComputeBenchOptions } from './compute-bench.js';
export {
  runClusterBench,
  mergeWorkerProgressive,
  clusterBenchOptionsSchema,
  missingTimings,
  type ClusterBenchOptions,
  type ClusterBenchOptionsInput,
  type ClusterBenchDeps,
} from './cluster-bench.js';
export {
  type ClusterHarness,
  type BenchCluster,
  type BenchActor,
  type HarnessStartOptions,
} from './cluster-harness.js';
export { WireTap, type WireTapReport, type TapSummary } from './wire-tap.js';
export {
  runWireBench,
  wireCosts,
  wireRatios,
  wireTargets,
  wireBenchOptionsSchema,
  type WireBenchOptions,
  type WireBenchOptionsInput,
} from './wire-bench.js';
export { CpuMeter, procCpuSeconds, selfCpuSeconds } from './proc-cpu.js';
export { measureCosts, measureRows, type MeasuredCosts } from './cost-probe.js';
export {
  simulate,
  maxSustainable,
  uniqueRows,
  defaultKnobs,
  type SimLayout,
  type SimKnobs,
  type SimResult,
} from './cluster-sim.js';
export { runScalingModel, layoutFor, type ScalingModelOptions } from './scaling-model.js';
export { repoRoot } from './repo-root.js';
export { runFtrlBench, type FtrlBenchOptions } from './ftrl-bench.js';
export { runDriftBench, driftPeerModel, type DriftBenchOptions } from './drift-bench.js';
export { driftMetrics, rollingAuc, type DriftMetrics } from './drift-metrics.js';
export {
  trainOnline,
  inProcessCore,
  type OnlineTrainOptions,
  type OnlineTrainRun,
} from './online-trainer.js';
export { runTorchPeer, type PeerResult } from './torch-peer.js';
export { runOpeBench, type OpeBenchOptions, type OpeBenchResult } from './ope-bench.js';
export {
  loadOpeLog,
  candidateFeatures,
  type OpeLog,
  type OpeLogOptions,
  type LoggedDecision,
} from './ope-data.js';
export {
  estimatePolicyValue,
  rankCandidates,
  argmaxSlotProbabilities,
  softmaxSlotProbabilities,
  uniformSlotProbabilities,
  MAX_SOFTMAX_SLOT,
  type OpeEstimate,
  type PolicyOnLog,
} from './ope-estimators.js';
export { runMoveBench, type MoveBenchOptions } from './move-bench.js';
