import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { createModel, type ModelConfigInput } from '@freshet/model';
import { mergeProgressive, partitionOf, subjects, type ProgressiveHistogram } from '@freshet/protocol';
import { pickCanary } from '@freshet/serving';
import { spawnChild, uniqueName, useNats, useTempDirs, waitFor } from '@freshet/testkit';
import {
  faultModel,
  outstanding,
  prepareCluster,
  repoRoot,
  publishExamples,
  shardOptions,
  startRole,
  useRoleProcesses,
  workerOptions,
  workerStatus,
  type RoleProcess,
} from './fault-kit.js';

/**
 * Two models in one NATS: cluster A (the live model: 1 shard, 1 worker, 2 serving nodes, one with
 * B as a shadow, one with B as a canary for 30% of users) and cluster B (1 shard, 1 worker that
 * reads A's feedback stream, another learning rate), all real processes. Counted: both workers
 * train every event published to A (examples = published) with their own progressive metrics; A's
 * consumers and B's on A's stream are separate and both drained; the shadow compares every
 * request; the canary serves the users `pickCanary` picks (their share near 30%, the same model on
 * a repeat); served CTR per model comes out of the join of impressions that carry `servedBy`.
 */
describe('several models in one cluster', () => {
  const nats = useNats();
  useRoleProcesses();
  const tempDir = useTempDirs();

  it('trains a second model on the live stream, shadows it and canaries it', async () => {
    const A = uniqueName('mma').replace(/[^A-Za-z0-9_-]/g, '');
    const B = uniqueName('mmb').replace(/[^A-Za-z0-9_-]/g, '');
    const PARTS = 2;
    const N = 600;
    const FRACTION = 0.3;
    const modelB: ModelConfigInput = {
      ...faultModel,
      name: 'faults-b',
      optimizer: { kind: 'sgd', lr: 0.3 },
    } as ModelConfigInput;
    const specB = createModel(modelB).spec;
    const dir = tempDir('multi-model');
    await prepareCluster(nats.nc, A, PARTS);
    // B's own bucket (leases, manifests, pin) and dead-letter stream; its feedback stream stays empty
    await prepareCluster(nats.nc, B, PARTS);
    await startRole('shard', shardOptions(A, 0, 1, nats.url, join(dir, 'a')));
    await startRole('shard', { ...shardOptions(B, 0, 1, nats.url, join(dir, 'b')), model: specB });
    // short windows so impressions become examples within the test
    const join_ = { joiner: { windowMs: 1000 }, joinClock: { everyMs: 100, lagMs: 100 } };
    await startRole('worker', workerOptions(A, 'wa', 1, PARTS, nats.url, join_));
    await startRole(
      'worker',
      workerOptions(B, 'wb', 1, PARTS, nats.url, { ...join_, model: modelB, feedback: { cluster: A } }),
    );
    const variant = { cluster: B, shards: 1, model: modelB };
    const serving = (id: string, v: Record<string, unknown>) =>
      startRole('serving', {
        cluster: A,
        id,
        shards: 1,
        nats: { servers: nats.url },
        model: faultModel,
        variants: [{ ...variant, ...v }],
      });
    const shadow = await serving('s-shadow', { mode: 'shadow' });
    const canary = await serving('s-canary', { mode: 'canary', fraction: FRACTION });

    await publishExamples(nats.nc, A, 0, N, PARTS);
    // impressions served by each model (as a client would mark them from the response), and clicks
    const js = nats.nc.jetstream();
    const s = subjects(A);
    const now = Date.now();
    const served = { [A]: { imps: 30, clicks: 6 }, [B]: { imps: 30, clicks: 12 } };
    for (const [model, c] of Object.entries(served)) {
      for (let i = 0; i < c.imps; i++) {
        const user = `v-${model}-${i}`;
        const subj = s.feedback(partitionOf(user, PARTS));
        const base = { v: 1, user, request: `r-${model}-${i}`, item: `i${i % 7}` };
        await js.publish(
          subj,
          JSON.stringify({
            ...base,
            id: `imp-${model}-${i}`,
            ts: now,
            kind: 'impression',
            meta: { servedBy: model },
          }),
        );
        if (i < c.clicks)
          await js.publish(
            subj,
            JSON.stringify({ ...base, id: `clk-${model}-${i}`, ts: now + 10, kind: 'click' }),
          );
      }
    }
    const examples = N + served[A]!.imps + served[B]!.imps;

    const stA = () => workerStatus(nats.nc, A, 'wa');
    const stB = () => workerStatus(nats.nc, B, 'wb');
    let last: unknown;
    await waitFor(
      async () => {
        const [a, b] = await Promise.all([stA(), stB()]);
        last = { a: a.examples, b: b.examples };
        return a.examples === examples && b.examples === examples;
      },
      { timeoutMs: 45_000, message: () => `both models trained every event: ${JSON.stringify(last)}` },
    );
    // each model's own consumers, each drained: B never took (or acked) A's events from A's consumers
    await waitFor(async () => (await outstanding(nats.nc, A, PARTS)) === 0, { timeoutMs: 20_000 });
    await waitFor(async () => (await outstanding(nats.nc, A, PARTS, `freshet-worker-${B}`)) === 0, {
      timeoutMs: 20_000,
    });
    const [a, b] = await Promise.all([stA(), stB()]);
    type Prog = { auc: number | null; logloss: number };
    const pa = a.progressive as Prog;
    const pb = b.progressive as Prog;
    expect(pa.auc).not.toBeNull();
    expect(pb.auc).not.toBeNull();
    // the same events, another learning rate: another progressive loss
    expect(pa.logloss).not.toBe(pb.logloss);
    expect(b.feedbackCluster).toBe(A);
    // served CTR per model, from the join, on both models' workers (both see every impression)
    for (const st of [a, b]) {
      const sv = st.served as Record<string, { impressions: number; positives: number }>;
      expect(sv[A]).toMatchObject({ impressions: served[A]!.imps, positives: served[A]!.clicks });
      expect(sv[B]).toMatchObject({ impressions: served[B]!.imps, positives: served[B]!.clicks });
    }

    // the serving nodes' replicas of B catch up with B's shard
    const status = async (node: RoleProcess) =>
      (await (await fetch(`${node.ready.http as string}/v1/status`)).json()) as {
        servedBy: Record<string, number>;
        variants: Array<{
          cluster: string;
          ready: boolean;
          version: number;
          served: number;
          fallbacks: number;
          shadow: {
            compared: number;
            top1Agreement: number | null;
            absDiff: { count: number; mean: number };
          };
        }>;
      };
    for (const node of [shadow, canary])
      await waitFor(async () => (await status(node)).variants[0]!.ready, { timeoutMs: 20_000 });
    const post = async (node: RoleProcess, op: 'score' | 'rank', user: string) => {
      const res = await fetch(`${node.ready.http as string}/v1/${op}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ user, candidates: [{ item: 'i1' }, { item: 'i2' }, { item: 'i3' }] }),
      });
      expect(res.status).toBe(200);
      return (await res.json()) as { servedBy: string; model: string };
    };

    // shadow: every request answered by A, every one compared with B
    const SH = 40;
    for (let i = 0; i < SH; i++) {
      const r = await post(shadow, i % 2 ? 'rank' : 'score', `u${i}`);
      expect(r.servedBy).toBe(A);
      expect(r.model).toBe('faults');
    }
    const ss = await status(shadow);
    expect(ss.servedBy).toEqual({ [A]: SH });
    expect(ss.variants[0]!.served).toBe(0);
    expect(ss.variants[0]!.shadow.compared).toBe(SH);
    expect(ss.variants[0]!.shadow.absDiff.count).toBe(SH * 3);
    // trained with other rates, the two models score differently
    expect(ss.variants[0]!.shadow.absDiff.mean).toBeGreaterThan(0);
    expect(ss.variants[0]!.shadow.top1Agreement).not.toBeNull();

    // canary: the users pickCanary puts in B's range are served by B, every time
    const USERS = 400;
    let byB = 0;
    const first = new Map<string, string>();
    for (let i = 0; i < USERS; i++) {
      const user = `c${i}`;
      const r = await post(canary, 'rank', user);
      first.set(user, r.servedBy);
      const expected = pickCanary(user, A, [FRACTION]) === 0 ? B : A;
      expect(r.servedBy).toBe(expected);
      expect(r.model).toBe(expected === B ? 'faults-b' : 'faults');
      if (r.servedBy === B) byB++;
    }
    // sd of the share over 400 users ≈ 0.023: within 3.5 sd
    expect(Math.abs(byB / USERS - FRACTION)).toBeLessThan(0.08);
    for (let i = 0; i < 100; i++) {
      const user = `c${i}`;
      expect((await post(canary, 'score', user)).servedBy).toBe(first.get(user));
    }
    const cs = await status(canary);
    const repeatsByB = [...first.entries()].slice(0, 100).filter(([, m]) => m === B).length;
    expect(cs.variants[0]!.served).toBe(byB + repeatsByB);
    expect(cs.servedBy[B]).toBe(byB + repeatsByB);
    expect(cs.servedBy[A]).toBe(USERS + 100 - byB - repeatsByB);

    // `freshet status --cluster A --also B`, as a process: both models side by side
    const r = await promisify(execFile)(
      process.execPath,
      [join(repoRoot, 'packages/cli/dist/main.js'), 'status', '--cluster', A, '--also', B, '--json'],
      { env: { ...process.env, FRESHET_NATS_URL: nats.url } },
    );
    type Row = {
      cluster: string;
      role: string;
      feedbackCluster: string | null;
      examples: number | null;
      auc: number | null;
      served: number;
      impressions: number;
      positives: number;
      fraction: number;
      shadow: { compared: number } | null;
    };
    const models = (JSON.parse(r.stdout) as { models: Row[] }).models;
    expect(models.map((m) => m.cluster)).toEqual([A, B]);
    const [ra, rb] = models as [Row, Row];
    expect(ra).toMatchObject({ role: 'live', feedbackCluster: A, examples, served: SH + cs.servedBy[A]! });
    // B is a shadow on one node and a canary on the other: the row names the canary, and the shadow's counts
    expect(rb).toMatchObject({ role: 'canary', fraction: FRACTION, feedbackCluster: A, examples });
    expect(rb.served).toBe(cs.servedBy[B]);
    expect(rb.shadow?.compared).toBe(SH);
    // each row's AUC is its own workers' merged histogram
    const merged = (st: Record<string, unknown>) =>
      mergeProgressive([st.progressiveHistogram as ProgressiveHistogram]).auc;
    expect(ra.auc).toBeCloseTo(merged(a), 12);
    expect(rb.auc).toBeCloseTo(merged(b), 12);
    expect(ra.auc).not.toBe(rb.auc);
    expect([ra.impressions, ra.positives, rb.impressions, rb.positives]).toEqual([
      served[A]!.imps,
      served[A]!.clicks,
      served[B]!.imps,
      served[B]!.clicks,
    ]);

    // `freshet dashboard --cluster A --also B`, as a process: the same rows in its state
    const dash = spawnChild(
      process.execPath,
      [join(repoRoot, 'packages/cli/dist/main.js'), 'dashboard', '--cluster', A, '--also', B, '--port', '0'],
      { cwd: repoRoot, env: { ...process.env, FRESHET_NATS_URL: nats.url } },
    );
    try {
      const url = await waitFor(() => /dashboard: (http:\S+)/.exec(dash.output())?.[1] ?? null, {
        timeoutMs: 20_000,
        message: () => `dashboard url: ${dash.output()}`,
      });
      const state = (await (await fetch(`${url}api/state`)).json()) as { models: Row[] | null };
      expect(state.models?.map((m) => [m.cluster, m.role, m.examples, m.impressions])).toEqual([
        [A, 'live', examples, served[A]!.imps],
        [B, 'canary', examples, served[B]!.imps],
      ]);
      // the page carries the Models table the state fills
      expect(await (await fetch(url)).text()).toContain('id="models"');
    } finally {
      await dash.stop(2000);
    }
  });
});
