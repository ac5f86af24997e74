export {
  clusterConfigSchema,
  natsConfigSchema,
  metricsConfigSchema,
  compileClusterConfig,
  parseClusterConfig,
  loadClusterConfig,
  defaultClusterConfig,
  natsConnectionOptions,
  planActors,
  clusterConfigToYaml,
  type ClusterConfig,
  type ClusterConfigInput,
  type NatsConfig,
  type ActorPlan,
} from './cluster-config.js';
export { roleSchemas, roleNames, type RoleName, type RoleBuildContext } from './role-schemas.js';
export {
  startLocalCluster,
  roleNodeArgs,
  cliMainPath,
  type LocalCluster,
  type LocalClusterOptions,
  type LocalProcess,
  type ClusterLog,
} from './local-cluster.js';
export { discoverActors, num, str, type ActorStatus, type DiscoverOptions } from './discovery.js';
