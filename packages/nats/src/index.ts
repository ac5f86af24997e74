export {
  startNatsServer,
  startNatsCluster,
  findNatsServer,
  natsServerVersion,
  freePort,
  generateRouteAuth,
  routeUrl,
  type RouteAuth,
  type RouteTls,
  type NatsServerOptions,
  type NatsServerHandle,
  type NatsClusterHandle,
} from './local-server.js';
export { issueRouteCerts, type RouteCertOptions, type RouteCerts } from './route-certs.js';
export {
  connectNats,
  newInbox,
  natsOptionsSchema,
  natsOptionsFromEnv,
  type NatsOptions,
  type NatsOptionsInput,
} from './connection.js';
export { requestBytes, fromNatsError, type RequestOptions } from './request.js';
export {
  frameEndpoint,
  frameHandler,
  type Endpoint,
  type EndpointOptions,
  type FrameHandler,
} from './endpoint.js';
export {
  DeadLetters,
  deadLetterHeaders,
  type DeadLetterSource,
  type DeadLettersOptions,
} from './dead-letters.js';
export { readRoleOptions, roleOptionsArgs, withEnvNats, type RoleOptionsSource } from './role-options.js';
export {
  modelSpecKey,
  readModelSpec,
  writeModelSpec,
  modelSpecConflicts,
  sameModelSpec,
  type StoredModelSpec,
} from './model-spec-store.js';
export {
  placementKey,
  leaseKey,
  placementSchema,
  leaseSchema,
  hostNameError,
  placementKv,
  readPlacement,
  readLease,
  writePlacement,
  planPlacement,
  takeLease,
  releaseLease,
  type Placement,
  type Lease,
  type Stored,
} from './shard-placement.js';
export { jsonLineLog, silentLog, type ActorLog, type LogLevel } from './actor-log.js';
export {
  Lifecycle,
  actorStates,
  actorTransitions,
  type ActorState,
  type LifecycleHooks,
  type LifecycleOptions,
} from './lifecycle.js';
export {
  runActorProcess,
  parseReadyLine,
  type ProcessActor,
  type ActorProcessExtras,
  type ActorProcessSpec,
  type ReadyLine,
} from './actor-process.js';
export { kvKeys } from './kv-keys.js';
export { EventDictionaries, listEventDictionaries, putEventDictionary } from './event-dictionaries.js';
export { threadEntry } from './thread-entry.js';
