import type { Command } from 'commander';
import { denseMode, eventEncoding, nonNegativeInt, positiveInt } from '../cli-args.js';

/** The bus flags `bench cluster` and `bench wire` share (`busOptionsSchema` of @freshet/bench). */
export interface BusFlags {
  dense: 'shard' | 'replica';
  denseSyncExamples: number;
  densePartFloats: number;
  halfFlush?: boolean;
  halfPull?: boolean;
  halfPush?: boolean;
  halfDeltas?: boolean;
  int8Pull?: boolean;
  int8Push?: boolean;
  int8Deltas?: boolean;
  /** commander's `--no-pull-sessions`: true unless given. */
  pullSessions?: boolean;
  /** commander's `--no-host-routing`: true unless given. */
  hostRouting?: boolean;
  hostLingerMs: number;
  hostDeltas?: boolean;
  deltaIntervalMs: number;
  encoding: 'json' | 'msgpack';
  compressEvents?: boolean;
}

/** Adds the bus flags to a bench command. */
export function withBusFlags(c: Command): Command {
  return c
    .option(
      '--dense <mode>',
      'dense tables: shard (per batch) or replica (worker copy, flushed)',
      denseMode,
      'shard',
    )
    .option('--dense-sync-examples <n>', 'examples per dense replica flush', positiveInt, 2048)
    .option(
      '--dense-part-floats <n>',
      'split dense tensors larger than this into parts on consecutive shards (0: whole)',
      nonNegativeInt,
      0,
    )
    .option('--half-flush', 'dense replica flushes as binary16 with error feedback')
    .option('--half-pull', 'workers pull embedding rows as binary16')
    .option('--half-push', "workers push embedding rows' gradients as binary16 (scaled per table)")
    .option('--half-deltas', 'shards publish embedding rows in deltas as binary16')
    .option('--int8-pull', 'workers pull embedding rows of 4+ values as int8 with a scale per row')
    .option(
      '--int8-push',
      'workers push gradients of embedding rows of 4+ values as int8 (stochastic rounding)',
    )
    .option('--int8-deltas', 'shards publish embedding rows of 4+ values as int8 with a scale per row')
    .option('--no-pull-sessions', "pushes repeat their pull's keys (the default names the pull instead)")
    .option(
      '--no-host-routing',
      'workers ask each shard of a shard host on its own (the default: one message per host)',
    )
    .option(
      '--host-linger-ms <n>',
      "a host message waits this long for the worker's next batches' parts",
      nonNegativeInt,
      0,
    )
    .option('--host-deltas', "a shard host's shards publish their deltas in one message per tick")
    .option('--delta-interval-ms <n>', 'shards publish deltas this often', positiveInt, 5)
    .option('--encoding <kind>', 'events published as json or msgpack', eventEncoding, 'json')
    .option('--compress-events', 'events compressed (zlib) with a dictionary of 2000 sample events');
}

/** The bench options the flags stand for. */
export function busInput(o: BusFlags) {
  return {
    dense: o.dense,
    denseSyncExamples: o.denseSyncExamples,
    densePartFloats: o.densePartFloats,
    halfFlush: o.halfFlush === true,
    halfPull: o.halfPull === true,
    halfPush: o.halfPush === true,
    halfDeltas: o.halfDeltas === true,
    int8Pull: o.int8Pull === true,
    int8Push: o.int8Push === true,
    int8Deltas: o.int8Deltas === true,
    pullSessions: o.pullSessions !== false,
    hostRouting: o.hostRouting !== false,
    hostLingerMs: o.hostLingerMs,
    hostDeltas: o.hostDeltas === true,
    deltaIntervalMs: o.deltaIntervalMs,
    encoding: o.encoding,
    compressEvents: o.compressEvents === true,
  };
}
