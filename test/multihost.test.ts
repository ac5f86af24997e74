import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { createModel } from '@freshet/model';
import { parseReadyLine } from '@freshet/nats';
import { shardOfDense, subjects } from '@freshet/protocol';
import {
  assertNetnsAvailable,
  connectNetnsNats,
  createNetnsLab,
  k8sPodNames,
  k8sPods,
  publishExamples,
  readK8sManifests,
  useTempDirs,
  waitFor,
  type NetnsLab,
} from '@freshet/testkit';
import { outstanding, PushLedger, shardStatus, workerStatus } from './fault-kit.js';
import {
  clusterFacts,
  deployBase,
  eventShape,
  ITEMS,
  LIKED,
  makeAuthSecret,
  natsPods,
  placePods,
  PodRunner,
} from './multihost-kit.js';

/** Machines (Kubernetes nodes); each pod is its own netns host on one of them. */
const NATS_HOSTS = ['n0', 'n1', 'n2'];
const ROLE_HOSTS = ['h1', 'h2', 'h3', 'h4'];
/** The first shard, worker and serving node share machine h1: the one the test takes down. */
const ROLES: Record<string, string[]> = {
  shard: ['h1', 'h2'],
  worker: ['h1', 'h3'],
  serving: ['h1', 'h4'],
  'freshet-init': ['h4'],
};
const VICTIM = 'h1';
const WAVE = 600;

const log = (msg: string) => console.log(`[multihost] ${msg}`);

interface RankReply {
  items: Array<{ item: string; score: number }>;
  version: number;
}

/**
 * The Kubernetes base (deploy/k8s/base) on 7 hosts, each a network namespace on one bridge:
 * 3 NATS servers (the StatefulSet, route TLS and nkey users as the production overlay makes
 * them), the init Job, then 2 shards, 2 workers and 2 serving nodes over 4 role hosts, every
 * process started with its manifest's command, args and env (docs/multi-host-test.md).
 * Load: 4 waves of 600 labelled events (the item decides the label), published from the root
 * namespace as the labeller user. After wave 1: learned (both serving nodes rank the liked
 * items first, over HTTP from another host). While wave 2 is being trained, machine h1 (a
 * shard, a worker and a serving node, each its own netns host) is lost: links down, every
 * process SIGKILLed; wave 3 is published while it is down, serving on h4 still answers, the
 * surviving worker takes every partition; h1 comes back and its pods start again from the
 * manifests on their kept volumes; wave 4 follows.
 * Counted: every event the stream acknowledged (2,400) is applied exactly once (Σ of the batch
 * example counts of distinct accepted push ids on one dense table = 1,800) and each shard's
 * version equals the push ids it accepted (no push applied twice under two ids); nothing left
 * unacked; the restarted serving node answers and ranks as learned.
 */
describe('multi-host: the Kubernetes manifests on netns hosts, a role host lost and back', () => {
  const tempDir = useTempDirs();
  let lab: NetnsLab | undefined;
  let runner: PodRunner | undefined;
  afterAll(async () => {
    // every pod's output, for a post-mortem: FRESHET_MULTIHOST_LOGS=<dir>
    if (process.env.FRESHET_MULTIHOST_LOGS) runner?.dumpLogs(process.env.FRESHET_MULTIHOST_LOGS);
    await lab?.destroy();
  });

  it('starts from the manifests, learns, serves, and loses no acknowledged event with a host down', async () => {
    const t0 = Date.now();
    // fails (never skips) where namespaces cannot be made, with the reason
    assertNetnsAvailable();
    const m = readK8sManifests(deployBase);
    const facts = clusterFacts(m);
    const placement = placePods(m, NATS_HOSTS, ROLES, ROLE_HOSTS);
    const names: Record<string, string> = {};
    for (const p of natsPods(m)) for (const n of k8sPodNames(m, p)) names[n] = p.name;
    lab = createNetnsLab({ hosts: [...placement.keys()], rateMbit: 1000, names });
    log(
      `lab ${lab.id}: bridge ${lab.bridge}, tbf ${lab.rateLimited}; placement ${JSON.stringify([...placement])}`,
    );
    const dir = tempDir('multihost');
    const secret = makeAuthSecret(m, facts, join(dir, 'secret'));
    const pods = new PodRunner(m, lab, placement, { 'nats-auth': secret.files }, join(dir, 'pods'));
    runner = pods;
    const { cluster, partitions, shards } = facts;

    // 1. NATS, 2. the init Job (retried like restartPolicy OnFailure), 3. the roles
    const nats = natsPods(m);
    for (const p of nats) await pods.start(p.name);
    for (const p of nats) await pods.ready(p.name, 30_000);
    const jobs = k8sPods(m).filter((p) => p.workload.kind === 'Job');
    for (const j of jobs) {
      const r = await pods.runJob(j.name, 10);
      log(`job ${j.name} succeeded after ${r.runs} run(s)`);
    }
    const roles = k8sPods(m).filter((p) => p.workload.kind !== 'Job' && !nats.some((n) => n.name === p.name));
    for (const p of roles) await pods.start(p.name);
    const rolesAt = Date.now();
    await Promise.all(
      roles.map(async (p) => {
        await pods.ready(p.name, 180_000);
        log(`${p.name} ready ${Date.now() - rolesAt} ms after its start`);
      }),
    );
    log(
      `${nats.length} NATS pods, ${jobs.length} job(s), ${roles.length} role pods ready after ${Date.now() - t0} ms`,
    );

    const clientPort = (podName: string, portName: string) => {
      const rp = pods.running.get(podName)!;
      const port = rp.pod.workload.containers.flatMap((c) => c.ports ?? []).find((x) => x.name === portName);
      if (!port) throw new Error(`${podName} has no port named ${portName}`);
      return `${rp.host.ip}:${port.containerPort}`;
    };
    const urls = nats.map((p) => `nats://${clientPort(p.name, 'client')}`);
    // the servers' certificates name nats-N.nats; the test dials addresses and checks those names
    const certNames = nats.map((p) => k8sPodNames(m, p)[0] ?? p.name);
    const caFile = join(dir, 'secret', 'route-ca.pem');
    const s = subjects(cluster);
    const obs = await connectNetnsNats({
      servers: urls,
      names: certNames,
      caFile,
      user: secret.observer.user,
      pass: secret.observer.pass,
      name: 'multihost-observer',
    });
    const pub = await connectNetnsNats({
      servers: urls,
      names: certNames,
      caFile,
      nkeySeedFile: join(dir, 'secret', 'labeller.nk'),
      inboxPrefix: s.inboxPrefix('labeller'),
      name: 'multihost-labeller',
    });
    try {
      // the shard on the victim host, and a dense table it owns: the ledger counts that table
      const victimPods = pods.podsOn(VICTIM);
      const victimShardPod = victimPods.find((p) => pods.running.get(p)?.pod.workload.labels.app === 'shard');
      if (!victimShardPod) throw new Error(`no shard placed on ${VICTIM}: ${victimPods.join(', ')}`);
      const shardReady = parseReadyLine(pods.tail(victimShardPod, 1_000_000));
      const victimShard =
        typeof shardReady?.shard === 'number'
          ? shardReady.shard
          : Number(/(\d+)$/.exec(shardReady?.id ?? '')?.[1]);
      expect(Number.isInteger(victimShard)).toBe(true);
      const spec = createModel(facts.model).spec;
      const table = spec.tables.findIndex(
        (t) => t.kind === 'dense' && shardOfDense(t, shards) === victimShard,
      );
      expect(table).toBeGreaterThanOrEqual(0);
      const ledger = PushLedger.start(obs, cluster, table);
      await obs.flush();

      // message ids: a publish the client retries (a server answering late under load) is
      // deduped by the stream, so "acked" counts each event once
      const shape = { ...eventShape(facts.model.features.fields.map((f) => f.name)), msgId: true };
      let next = 0;
      let acked = 0;
      const publish = async () => {
        const from = next;
        next += WAVE;
        await publishExamples(pub, cluster, from, WAVE, partitions, shape); // resolves once every ack is in
        acked += WAVE;
      };
      const drained = async (what: string, timeoutMs: number) => {
        // what a timeout reports: events still unacked, and events dead-lettered (acked, never applied)
        let left = -1;
        let deadLettered = -1;
        let where = '';
        const jsm = await obs.jetstreamManager();
        await waitFor(
          async () => {
            left = await outstanding(obs, cluster, partitions);
            deadLettered = await jsm.streams.info(s.deadLetterStream).then(
              (i) => i.state.messages,
              () => 0,
            );
            const ok = left === 0 && ledger.examples() >= acked;
            if (!ok && left === 0) {
              const st = (await jsm.streams.info(s.feedbackStream)).state;
              where = ledger.lost(victimShard, st.first_seq, st.last_seq);
            }
            return ok;
          },
          {
            timeoutMs,
            intervalMs: 250,
            message: () =>
              `${what}: ${ledger.examples()} of ${acked} applied, ${left} events not yet acked, ` +
              `${deadLettered} dead-lettered; ` +
              `accepted ids per shard ${[...Array(shards).keys()].map((i) => ledger.acceptedBy(i)).join('/')}, ` +
              `re-pushes of part of a batch ${ledger.partialDuplicates}, tap ${JSON.stringify(ledger.tapEvents)}; ${where}`,
          },
        );
        await obs.flush();
      };

      const servingPods = roles.filter((p) => p.workload.labels.app === 'serving').map((p) => p.name);
      const liked = new Set(Array.from({ length: LIKED }, (_, i) => `i${i}`));
      const rank = async (pod: string): Promise<RankReply> => {
        const r = await fetch(`http://${clientPort(pod, 'http')}/v1/rank`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({
            user: 'u1',
            k: LIKED,
            candidates: Array.from({ length: ITEMS }, (_, i) => ({ item: `i${i}` })),
          }),
          signal: AbortSignal.timeout(3000),
        });
        if (!r.ok) throw new Error(`${pod} /v1/rank: ${r.status} ${await r.text()}`);
        return (await r.json()) as RankReply;
      };
      const rankedLiked = async (pod: string) =>
        (await rank(pod)).items.filter((i) => liked.has(i.item)).length;
      const learned = (pod: string) =>
        waitFor(async () => (await rankedLiked(pod)) === LIKED, {
          timeoutMs: 30_000,
          intervalMs: 250,
          message: `${pod} ranks the liked items first`,
        });

      // wave 1: learning, and serving from both nodes
      await publish();
      await drained('wave 1', 60_000);
      for (const p of servingPods) await learned(p);
      log(`wave 1 applied and learned after ${Date.now() - t0} ms`);

      // host loss under load: while wave 2 is being trained, h1's links go down and every
      // process on it is SIGKILLed
      const wave2 = publish();
      await waitFor(() => ledger.examples() > WAVE, { timeoutMs: 60_000, message: 'wave 2 being trained' });
      const downAt = Date.now();
      await lab.down(victimPods);
      for (const p of victimPods) expect(lab.host(p).pids()).toEqual([]);
      const inFlight = (await wave2.then(() => acked)) - ledger.examples();
      log(`${VICTIM} down (${victimPods.join(', ')}); ${inFlight} acknowledged events not yet applied`);
      await publish(); // wave 3: acknowledged by the stream while the host is down
      const survivor = servingPods.find((p) => !victimPods.includes(p))!;
      expect((await rank(survivor)).items).toHaveLength(LIKED);
      // down until the cluster has seen it: the surviving workers hold every partition
      const survivors = roles
        .filter((p) => p.workload.labels.app === 'worker' && !victimPods.includes(p.name))
        .map((p) => String(parseReadyLine(pods.tail(p.name, 1_000_000))?.id));
      await waitFor(
        async () => {
          const held = await Promise.all(
            survivors.map(
              async (id) => ((await workerStatus(obs, cluster, id)) as { partitions: number[] }).partitions,
            ),
          );
          return new Set(held.flat()).size === partitions;
        },
        { timeoutMs: 40_000, intervalMs: 500, message: 'the surviving workers take every partition' },
      );
      log(`surviving workers own every partition ${Date.now() - downAt} ms after the loss`);

      // back: link up, its pods start again from the manifests on their kept volumes
      for (const p of victimPods) lab.host(p).up();
      for (const p of victimPods) await pods.start(p);
      await Promise.all(victimPods.map((p) => pods.ready(p, 180_000)));
      log(`${VICTIM} back after ${Date.now() - downAt} ms down`);
      await publish(); // wave 4
      await drained('every wave', 120_000);
      for (const p of servingPods) await learned(p);

      const applied = ledger.examples();
      const inStream = (await (await obs.jetstreamManager()).streams.info(s.feedbackStream)).state.messages;
      log(`feedback stream holds ${inStream} events`);
      const versions: number[] = [];
      for (let i = 0; i < shards; i++) versions.push((await shardStatus(obs, cluster, i)).version);
      const acceptedIds = versions.map((_, i) => ledger.acceptedBy(i));
      log(
        `acked ${acked}, applied ${applied} (table ${spec.tables[table]!.name} on shard ${victimShard}); ` +
          `shard versions ${versions.join('/')}, accepted push ids ${acceptedIds.join('/')}; ` +
          `push requests seen ${ledger.requests}, re-pushes of part of a batch ${ledger.partialDuplicates}; ` +
          `total ${Date.now() - t0} ms`,
      );
      expect(applied).toBe(acked); // none lost, none twice
      expect(versions).toEqual(acceptedIds); // no push applied that the ledger did not see accepted once
    } finally {
      await pub.close();
      await obs.close();
    }
    // cleanup proves itself: every process gone, nothing of the lab left (destroy throws)
    const handles = [...pods.running.values()].flatMap((r) => r.handles);
    await lab.destroy();
    await Promise.all(handles.map((h) => h.exited));
    lab = undefined;
  }, 420_000);
});
