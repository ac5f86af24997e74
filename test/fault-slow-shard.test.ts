import { describe, expect, it } from 'vitest';
import { frameEndpoint } from '@freshet/nats';
import {
  decodePull,
  decodePush,
  encodeErrorReply,
  encodePullReply,
  encodePushReply,
  FreshetError,
  subjects,
  toErrorEnvelope,
  type ModelSpec,
} from '@freshet/protocol';
import { ShardCore } from '@freshet/shard';
import { compileWorkerOptions } from '@freshet/worker';
import { uniqueName, useNats, waitFor } from '@freshet/testkit';
import {
  denseShard,
  faultSpec,
  outstanding,
  prepareCluster,
  publishExamples,
  startRole,
  workerOptions,
  workerStatus,
  useRoleProcesses,
} from './fault-kit.js';

/**
 * Load: 2 worker processes, 2 shards whose state is a real ShardCore (row store, SGD, staleness
 * rule, idempotent ids) behind NATS endpoints in this process; the shard that owns the dense
 * table answers every pull and push 40 ms late (the artificial delay). 4 partitions, 2,000
 * pre-labelled events published at once. Every table uses the `reject` staleness policy with
 * bound 6. Counted, sampled every 50 ms while the backlog drains: each worker's buffered events
 * ≤ maxBufferedEvents (128) and in-flight batches ≤ maxInFlightBatches (2); unacked events on the
 * consumers ≤ what the two workers may hold; τ of every applied push ≤ 6; at the end, examples
 * applied through the dense table = 2,000 exactly.
 */
describe('fault: a slow shard', () => {
  const nats = useNats();
  useRoleProcesses();

  it('backpressure bounds worker memory; staleness stays within its bound', async () => {
    const cluster = uniqueName('fslow').replace(/[^A-Za-z0-9_-]/g, '');
    const s = subjects(cluster);
    const SHARDS = 2;
    const PARTS = 4;
    const TOTAL = 2000;
    const BOUND = 6;
    const DELAY_MS = 40;
    const MAX_BUFFERED = 128;
    const BATCH = 32;
    const IN_FLIGHT = 2;
    const spec: ModelSpec = {
      ...faultSpec,
      tables: faultSpec.tables.map((t) => ({
        ...t,
        staleness: { policy: 'reject', bound: BOUND, lambda: 0, tolerance: 0 },
      })),
    };
    const slow = denseShard(SHARDS);
    let maxTau = 0;
    let denseExamples = 0;
    let staleRejects = 0;
    const denseTable = spec.tables.findIndex((t) => t.kind === 'dense');
    const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
    const eps = [0, 1].map((shard) => {
      const core = new ShardCore({
        spec,
        shard,
        shards: SHARDS,
        checkOwnership: true,
        maxPushRows: 1 << 20,
        maxPullKeys: 1 << 20,
        sketchWidth: 1 << 10,
        recentPushIds: 100_000,
        dcMaxWorkers: 4,
        dcMaxRowsPerWorker: 1 << 12,
      });
      const delay = shard === slow ? DELAY_MS : 0;
      return [
        frameEndpoint(nats.nc, s.pull(shard), async (d) => {
          if (delay) await sleep(delay);
          return encodePullReply(core.pull(decodePull(d)));
        }),
        frameEndpoint(nats.nc, s.push(shard), async (d) => {
          if (delay) await sleep(delay);
          const req = decodePush(d);
          if (core.appliedVersion(req.id) !== undefined) {
            return encodePushReply({ version: core.version, staleness: 0, applied: 0, duplicate: true });
          }
          try {
            const r = core.applyPush(req, Date.now());
            maxTau = Math.max(maxTau, r.tau);
            for (const t of req.tables) if (t.t === denseTable) denseExamples += t.counts[0]!;
            return encodePushReply({
              version: r.version,
              staleness: r.tau,
              applied: r.applied,
              duplicate: false,
            });
          } catch (e) {
            if (e instanceof FreshetError && e.code === 'STALE') staleRejects++;
            return encodeErrorReply(toErrorEnvelope(e));
          }
        }),
      ];
    });
    try {
      await prepareCluster(nats.nc, cluster, PARTS);
      const extra = {
        batch: { size: BATCH, maxWaitMs: 10 },
        maxBufferedEvents: MAX_BUFFERED,
        maxInFlightBatches: IN_FLIGHT,
      };
      await Promise.all(
        ['wa', 'wb'].map((id) =>
          startRole('worker', workerOptions(cluster, id, SHARDS, PARTS, nats.url, extra)),
        ),
      );
      await publishExamples(nats.nc, cluster, 0, TOTAL, PARTS);

      const seen = { buffered: 0, inFlight: 0, ackPending: 0, samples: 0 };
      const jsm = await nats.nc.jetstreamManager();
      await waitFor(
        async () => {
          for (const id of ['wa', 'wb']) {
            const st = (await workerStatus(nats.nc, cluster, id)) as {
              bufferedEvents: number;
              inFlightBatches: number;
            };
            seen.buffered = Math.max(seen.buffered, st.bufferedEvents);
            seen.inFlight = Math.max(seen.inFlight, st.inFlightBatches);
          }
          let ackPending = 0;
          for (let p = 0; p < PARTS; p++)
            ackPending += (await jsm.consumers.info(s.feedbackStream, `freshet-worker-p${p}`))
              .num_ack_pending;
          seen.ackPending = Math.max(seen.ackPending, ackPending);
          seen.samples++;
          return (await outstanding(nats.nc, cluster, PARTS)) === 0 && denseExamples === TOTAL;
        },
        {
          timeoutMs: 90_000,
          intervalMs: 50,
          message: () => `drained: applied ${denseExamples} of ${TOTAL}, ${JSON.stringify(seen)}`,
        },
      );
      console.log(`[fault-slow-shard] ${JSON.stringify({ ...seen, maxTau, staleRejects })}`);
      // the backlog took many samples to drain: the bounds held under sustained pressure
      expect(seen.samples).toBeGreaterThan(5);
      expect(seen.buffered).toBeLessThanOrEqual(MAX_BUFFERED);
      // with overlapPush each slot may also hold one batch whose push is sent and unanswered
      const { overlapPush } = compileWorkerOptions(
        workerOptions(cluster, 'wa', SHARDS, PARTS, nats.url, extra),
      );
      const held = (overlapPush ? 2 : 1) * IN_FLIGHT;
      expect(seen.inFlight).toBeLessThanOrEqual(held);
      // per worker: buffered + in flight (+ one fetch of up to 2 batches that may overshoot the buffer)
      expect(seen.ackPending).toBeLessThanOrEqual(2 * (MAX_BUFFERED + BATCH * (held + 2)));
      expect(maxTau).toBeLessThanOrEqual(BOUND);
      expect(denseExamples).toBe(TOTAL);
    } finally {
      for (const pair of eps) for (const e of pair) await e.drain();
    }
  });
});
