export {
  streamOptionsSchema,
  compileStreamOptions,
  type StreamOptions,
  type StreamOptionsInput,
} from './stream-options.js';
export { ensureStream, streamPartitions, type StreamTopology } from './stream.js';
export {
  publisherOptionsSchema,
  compilePublisherOptions,
  type PublisherOptions,
  type PublisherOptionsInput,
} from './publisher-options.js';
export { Publisher, type PublisherState, type PublisherStats } from './publisher.js';
export { publishLive } from './live.js';
// DeadLetters lives in @freshet/nats (the worker uses it too); publishers keep importing it here.
export {
  DeadLetters,
  deadLetterHeaders,
  type DeadLetterSource,
  type DeadLettersOptions,
} from '@freshet/nats';
export {
  DeadLetterStore,
  type StoredDeadLetter,
  type DeadLetterFilter,
  type DeadLetterSummary,
} from './dead-letter-store.js';
export { validateOrDeadLetter, Ingest, type IngestMessage, type IngestCounters } from './ingest.js';
export { splitCsvLine, readLines } from './datasets/csv.js';
export { readCriteo, type CriteoOptions } from './datasets/criteo.js';
export { readMovieLens, movieLensRatingsFile, type MovieLensOptions } from './datasets/movielens.js';
export { readOpenBandit, openBanditLogFile, type OpenBanditOptions } from './datasets/open-bandit.js';
export { csvSpecSchema, loadCsvSpec, readCsv, type CsvSpec, type CsvSpecInput } from './datasets/csv-spec.js';
export {
  SyntheticWorld,
  syntheticEvents,
  type SyntheticExample,
  type SyntheticOptions,
  type SyntheticShown,
} from './datasets/synthetic.js';
export {
  openDataset,
  parseDatasetRef,
  datasetKinds,
  type DatasetKind,
  type OpenDatasetOptions,
} from './datasets/index.js';
export {
  runReplay,
  datasetDictionary,
  restamped,
  type ReplayOptions,
  type ReplayProgress,
  type ReplaySummary,
} from './replay.js';
