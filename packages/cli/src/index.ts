export {
  clusterConfigSchema,
  natsConfigSchema,
  metricsConfigSchema,
  compileClusterConfig,
  parseClusterConfig,
  loadClusterConfig,
  defaultClusterConfig,
  defaultModel,
  natsConnectionOptions,
  clientTls,
  planActors,
  planActor,
  clusterConfigToYaml,
  type ClusterConfig,
  type ClusterConfigInput,
  type NatsConfig,
  type ActorPlan,
} from './cluster-config.js';
export {
  roleSchemas,
  roleNames,
  type RoleName,
  type RoleBuildContext,
  type RoleClusterFields,
} from './role-schemas.js';
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
export {
  clusterView,
  shardView,
  workerView,
  servingView,
  type ClusterView,
  type ShardView,
  type WorkerView,
  type ServingView,
  type HistogramView,
} from './actor-view.js';
export {
  createActorMetrics,
  serveActorMetrics,
  createClusterMetrics,
  serveMetrics,
  type ClusterMetrics,
  type MetricsServer,
} from './metrics.js';
export { collectStatus, renderStatus } from './commands/status.js';
export {
  generateNatsAuth,
  rolePermissions,
  authorizationBlock,
  clusterAuthBlock,
  writeAuthFiles,
  tlsBlock,
  natsRoles,
  type NatsRole,
  type RoleCredentials,
  type RolePermissions,
  type GeneratedAuth,
} from './nats-auth.js';
export {
  startDashboard,
  pointOf,
  dashboardState,
  servingFreshnessOf,
  type Dashboard,
  type DashboardOptions,
  type DashboardState,
  type DashboardPoint,
} from './dashboard/server.js';
export { ReportRecorder, reportPage, sampleCluster, type ReportOptions, type ReportPoint } from './report.js';
export { chartBody, chartScript, chartStyles, type ChartCard } from './dashboard/charts.js';
export {
  serveRoleAdmin,
  answerAdmin,
  type AdminHandler,
  type RoleAdmin,
  type RoleAdminOptions,
} from './role-admin.js';
export {
  placeShards,
  moveShard,
  forceReleaseShard,
  shardPlacement,
  type PlaceOptions,
  type PlaceReport,
  type ShardWhere,
} from './shard-placement-ops.js';
