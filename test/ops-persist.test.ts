import { afterAll, describe, expect, it } from 'vitest';
import { clusterView, compileClusterConfig, startLocalCluster, type LocalCluster } from '@freshet/cli';
import { subjects } from '@freshet/protocol';
import { outstanding, publishExamples, uniqueName, useTempDirs, waitFor } from '@freshet/testkit';

/**
 * `nats.persist`: a local cluster stopped and started again over the same dataDir goes on where
 * it stopped. Load: 40 pre-labelled events learned by one worker (2 partitions), then a restart.
 * Counted: the stream still holds the 40 events, and the restarted worker learns the 20
 * published after the restart and nothing else (the consumers kept their acks). The control starts the same
 * cluster without `persist` and finds an empty stream.
 */
const clusters: LocalCluster[] = [];
const tempDir = useTempDirs();
afterAll(async () => {
  await Promise.allSettled(clusters.map((c) => c.stop()));
});

async function start(cluster: string, dataDir: string, persist: boolean): Promise<LocalCluster> {
  const cfg = compileClusterConfig({
    cluster,
    dataDir,
    nats: { persist },
    partitions: 2,
    shards: { count: 1 },
    workers: { count: 1, options: { compute: { threads: 1 }, lease: { heartbeatMs: 250, ttlMs: 1500 } } },
    serving: { count: 0 },
    metrics: { enabled: false },
  });
  const lc = await startLocalCluster(cfg, { stopGraceMs: 5000, readyTimeoutMs: 90_000 });
  clusters.push(lc);
  return lc;
}

const messages = async (lc: LocalCluster) =>
  (await (await lc.nc.jetstreamManager()).streams.info(subjects(lc.cluster).feedbackStream)).state.messages;

describe('a persisted local cluster', () => {
  it('keeps its stream, consumers and acks across a restart', async () => {
    const cluster = uniqueName('persist').replace(/[^A-Za-z0-9_-]/g, '');
    const dataDir = tempDir('persist');
    let lc = await start(cluster, dataDir, true);
    await publishExamples(lc.nc, cluster, 0, 40, 2);
    await waitFor(async () => (await outstanding(lc.nc, cluster, 2)) === 0, {
      timeoutMs: 60_000,
      message: 'the first 40 events learned',
    });
    await lc.stop();

    lc = await start(cluster, dataDir, true);
    expect(await messages(lc)).toBe(40);
    await publishExamples(lc.nc, cluster, 40, 20, 2);
    await waitFor(async () => (await outstanding(lc.nc, cluster, 2)) === 0, {
      timeoutMs: 60_000,
      message: 'the 20 new events learned',
    });
    expect(await messages(lc)).toBe(60);
    // the restarted worker learned the 20 new events only: the consumers kept their acks
    expect(clusterView(await lc.actors(), cluster).workers[0]?.examples).toBe(20);
    await lc.stop();
  }, 240_000);

  it('control: without persist a restart starts from an empty stream', async () => {
    const cluster = uniqueName('volatile').replace(/[^A-Za-z0-9_-]/g, '');
    const dataDir = tempDir('volatile');
    let lc = await start(cluster, dataDir, false);
    await publishExamples(lc.nc, cluster, 0, 10, 2);
    expect(await messages(lc)).toBe(10);
    await lc.stop();
    lc = await start(cluster, dataDir, false);
    expect(await messages(lc)).toBe(0);
    await lc.stop();
  }, 240_000);
});
