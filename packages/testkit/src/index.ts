export { waitFor, uniqueName } from './wait-for.js';
export { useNats, useNatsCluster, type NatsFixture } from './nats-fixture.js';
export { spawnChild, isAlive, type ChildHandle } from './processes.js';
export { startNatsServer, startNatsCluster, findNatsServer } from '@freshet/nats';
export { chromiumPath } from './chromium.js';
export {
  createNetnsLab,
  useNetnsLab,
  assertNetnsAvailable,
  type NetnsLab,
  type NetnsHost,
  type NetnsLabOptions,
} from './netns.js';
export { netnsRemovalScript } from './netns-watchdog.js';
export {
  readK8sManifests,
  k8sPods,
  k8sPodNames,
  materializePod,
  rewriteMountPaths,
  type K8sManifests,
  type K8sWorkload,
  type K8sContainer,
  type K8sPod,
  type ImageRuntime,
  type PodLaunch,
} from './netns-pods.js';
export { connectNetnsNats, type NetnsNatsOptions } from './netns-nats.js';
export { startLossyLink, type LossyLink } from './lossy-link.js';
export { publishExamples, outstanding, consumerBacklog, setAckWait, type ExampleShape } from './feedback.js';
export { useTempDirs } from './temp-dirs.js';
export { embeddingModel, keyOnShard, keysOnEveryShard, onePush, placeShardsInKv } from './shard-fixtures.js';
export {
  writeCriteoFixture,
  writeMovieLensFixture,
  writeOpenBanditFixture,
  writeCsvFixture,
  type CriteoFixture,
  type CriteoFixtureRow,
  type MovieLensFixture,
  type OpenBanditFixture,
  type CsvFixture,
} from './datasets/index.js';
export { writeRouteCerts } from './route-certs.js';
