export {
  batchTransferList,
  type Example,
  type SparseInput,
  type EncodedBatch,
  type BatchRows,
  type GradientResult,
} from './batch.js';
export { initBackend, activeBackend, type BackendPreference, type BackendInfo } from './backend.js';
export {
  categoricalFieldSchema,
  numericFieldSchema,
  tokensFieldSchema,
  crossFieldSchema,
  fieldSchema,
  featureSpecSchema,
  compileFeatureSpec,
  readFeatureSpec,
  NUMERIC_LIMIT,
  NUMERIC_INPUT_LIMIT,
  type FieldSpec,
  type FeatureSpec,
  type FeatureSpecInput,
  type SparseField,
  type NumericColumn,
  type CompiledFeatureSpec,
} from './feature-spec.js';
export { FeatureEncoder, bucketOf, categoricalValue, valueId, type RunningStats } from './encoder.js';
export { mergeRunningStats } from './running-stats.js';
export { KeyIndex } from './key-index.js';
export {
  modelKinds,
  modelConfigSchema,
  tableOverrideSchema,
  compileModelConfig,
  type ModelKind,
  type ModelConfig,
  type ModelConfigInput,
  type TableOverride,
  type DenseParam,
  type LinearLayer,
  type ModelLayout,
} from './model-config.js';
export { createModel, initRows, type Model } from './model.js';
export { computeGradients, predict, logLoss } from './compute.js';
export { ftrlSequential, isSequentialFtrl } from './ftrl-local.js';
export { DenseOptimizer } from './dense-optimizer.js';
export {
  criteoIntFields,
  criteoCatFields,
  criteoFeatureSpec,
  criteoWideDeepConfig,
  criteoPeerWideDeepConfig,
  criteoPeerHashBuckets,
  criteoWideOptimizer,
  criteoDeepFmConfig,
  parseCriteoLine,
} from './criteo.js';
