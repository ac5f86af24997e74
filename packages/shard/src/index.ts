export { RowStore, MAX_ROWS, META_WORDS, TICK_MS, tickOf, type RowStoreOptions } from './row-store.js';
export { AdmissionSketch } from './admission.js';
export { TauHistogram, DcBackups, SspGate, stalenessScale } from './staleness.js';
export { ParamTable } from './param-table.js';
export { ShardCore, type ShardCoreOptions, type ApplyResult, type ReplayInfo } from './shard-core.js';
export { runShardBench, type ShardBenchOptions } from './bench.js';
