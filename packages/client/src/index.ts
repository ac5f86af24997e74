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
export {
  DeadLetters,
  deadLetterHeaders,
  type DeadLetterSource,
  type DeadLettersOptions,
} from './dead-letters.js';
export { validateOrDeadLetter, Ingest, type IngestMessage, type IngestCounters } from './ingest.js';
