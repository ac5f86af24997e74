import { execFile } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { promisify } from 'node:util';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { createModel, type ModelConfigInput } from '@freshet/model';
import {
  decodePullReply,
  encodePull,
  featureId,
  shardOfDense,
  shardOfKey,
  shardStatusSubject,
  subjects,
  type ShardStatus,
} from '@freshet/protocol';
import { aligned } from '@freshet/shard';
import { uniqueName, useNats, useTempDirs, waitFor } from '@freshet/testkit';
import { runModelImport } from '../packages/cli/src/commands/model-import.js';
import { encodeWarmStart, type WarmStartFile } from '../packages/cli/src/warm-start-file.js';
import { kill9, repoRoot, startRole, useRoleProcesses, type RoleProcess } from './fault-kit.js';

const execFileP = promisify(execFile);

/**
 * Warm start against real processes (docs/warm-start.md): nats-server, 2 shard processes and a
 * serving node; a warm-start file of 60 users' and 30 items' rows (FM: wide, emb, lin) imported
 * with `freshet model import` (a CLI process; the repeat through the command's function). Checked: every row reads back from its owning shard bit for bit;
 * the serving node scores a (user, item) pair as the imported weights say; a second import of the
 * same file changes nothing (push ids); after kill -9 and restart of both shards the rows are
 * still bit for bit; a file whose dims do not match the model is refused, naming the table, and
 * nothing moves.
 */

const model: ModelConfigInput = {
  name: 'warm',
  kind: 'fm',
  features: {
    fields: [
      { kind: 'categorical', name: 'user' },
      { kind: 'categorical', name: 'item' },
    ],
  },
  embeddingDim: 4,
  optimizer: { kind: 'adam', lr: 0.01 },
};
const spec = createModel(model).spec;
const DIM = 4;
const SHARDS = 2;

function keysOf(values: string[][]): Uint32Array {
  const k = new Uint32Array(values.length * 2);
  values.forEach(([field, value], i) => featureId(field!, value!, k, 2 * i));
  return k;
}

/** Seeded values far from the initial rows (and with float32 residuals the import must fix). */
function values(n: number, seed: number): Float32Array {
  let s = seed >>> 0 || 1;
  return Float32Array.from({ length: n }, () => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return ((s >>> 0) / 2 ** 32 - 0.5) * 0.8;
  });
}

describe('warm start: freshet model import', () => {
  const nats = useNats();
  useRoleProcesses();
  const tempDir = useTempDirs();

  it('puts the file on the shards bit for bit, reaches serving, survives a restart, refuses a bad file', async () => {
    const cluster = uniqueName('warm').replace(/[^A-Za-z0-9_-]/g, '');
    const dir = tempDir('warm-start');
    const shardOpts = (i: number) => ({
      cluster,
      shard: i,
      shards: SHARDS,
      nats: { servers: nats.url },
      model: spec,
      dataDir: join(dir, `shard-${i}`),
    });
    const shards: RoleProcess[] = await Promise.all([0, 1].map((i) => startRole('shard', shardOpts(i))));
    const serving = await startRole('serving', {
      cluster,
      id: 's0',
      shards: SHARDS,
      nats: { servers: nats.url },
      model,
    });

    const ids = [
      ...Array.from({ length: 60 }, (_, i) => ['user', `u${i}`]),
      ...Array.from({ length: 30 }, (_, i) => ['item', `i${i}`]),
    ];
    const keys = keysOf(ids);
    const n = ids.length;
    const file: WarmStartFile = {
      tables: new Map([
        ['wide', { kind: 'sparse', dim: 1, keys, values: values(n, 7) }],
        ['emb', { kind: 'sparse', dim: DIM, keys, values: values(n * DIM, 11) }],
        ['lin', { kind: 'dense', values: Float32Array.of(-0.25) }],
      ]),
      metadata: {},
    };
    const path = join(dir, 'warm.safetensors');
    writeFileSync(path, encodeWarmStart(file));
    const modelPath = join(dir, 'model.json');
    writeFileSync(modelPath, JSON.stringify(model));
    const flags = { cluster, model: modelPath, chunkRows: '16', timeoutMs: '10000' };

    const s = subjects(cluster);
    /** Every row of `table` as its owning shard answers a pull. */
    const pullAll = async (table: string): Promise<Float32Array> => {
      const t = spec.tables.findIndex((x) => x.name === table);
      const dim = spec.tables[t]!.dim;
      const dense = spec.tables[t]!.kind === 'dense';
      const out = new Float32Array((dense ? 1 : n) * dim);
      for (let i = 0; i < (dense ? 1 : n); i++) {
        const k = dense ? new Uint32Array(2) : keys.subarray(2 * i, 2 * i + 2);
        const sh = dense ? shardOfDense(spec.tables[t]!, SHARDS) : shardOfKey(t, k[0]!, k[1]!, SHARDS);
        const r = await nats.nc.request(
          s.pull(sh),
          encodePull({ worker: 'test', tables: [{ t, keys: k }] }),
          {
            timeout: 5000,
          },
        );
        out.set(decodePullReply(aligned(r.data)).tables[0]!.values, i * dim);
      }
      return out;
    };
    const bits = (a: Float32Array) => Array.from(new Uint32Array(a.buffer, a.byteOffset, a.length));
    const expectImported = async () => {
      for (const [name, t] of file.tables) expect(bits(await pullAll(name))).toEqual(bits(t.values));
    };
    const versions = async () =>
      Promise.all(
        [0, 1].map(async (i) => {
          const r = await nats.nc.request(shardStatusSubject(cluster, i), new Uint8Array(), {
            timeout: 3000,
          });
          return (JSON.parse(new TextDecoder().decode(r.data)) as ShardStatus).version;
        }),
      );

    // the rows start elsewhere: the initial embedding rows are not the file's
    expect(bits(await pullAll('emb'))).not.toEqual(bits(file.tables.get('emb')!.values));

    /** `freshet model import` as a process: its JSON report, or its exit code and stderr. */
    const cli = async (file: string) => {
      try {
        const r = await execFileP(
          process.execPath,
          [
            join(repoRoot, 'packages', 'cli', 'dist', 'main.js'),
            'model',
            'import',
            file,
            ...[
              '--nats',
              nats.url,
              '--cluster',
              cluster,
              '--model',
              modelPath,
              '--chunk-rows',
              '16',
              '--json',
            ],
          ],
          { cwd: repoRoot, timeout: 60_000 },
        );
        return { code: 0, report: JSON.parse(r.stdout.trim()) as Awaited<ReturnType<typeof runModelImport>> };
      } catch (e) {
        const err = e as { code?: number; stderr?: string };
        return { code: err.code ?? -1, stderr: err.stderr ?? '' };
      }
    };
    const ran = await cli(path);
    expect(ran.code).toBe(0);
    const report = ran.report!;
    expect(report.shards).toBe(SHARDS);
    expect(report.differing).toBe(0);
    expect(report.rows).toEqual({ wide: n, emb: n, lin: 1 });
    // chunks of 16 rows on 2 shards: more than one push per shard, and float32 residuals fixed
    expect(report.pushes).toBeGreaterThan(2 * SHARDS);
    await expectImported();

    // serving scores (u3, i5) as the file says: σ(wide_u + wide_i + bias + ⟨emb_u, emb_i⟩)
    const wide = file.tables.get('wide')!.values;
    const emb = file.tables.get('emb')!.values;
    const u = 3;
    const it5 = 60 + 5;
    let logit = wide[u]! + wide[it5]! - 0.25;
    for (let k = 0; k < DIM; k++) logit += emb[u * DIM + k]! * emb[it5 * DIM + k]!;
    const expected = 1 / (1 + Math.exp(-logit));
    const score = async () => {
      const res = await fetch(`${serving.ready.http as string}/v1/score`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ user: 'u3', candidates: [{ item: 'i5' }] }),
      });
      expect(res.status).toBe(200);
      return ((await res.json()) as { scores: number[] }).scores[0]!;
    };
    let served = NaN;
    await waitFor(async () => Math.abs((served = await score()) - expected) < 1e-5, {
      timeoutMs: 15_000,
      message: () => `serving scores ${served}, the file says ${expected}`,
    });

    // the same file again: nothing to change, nothing applied twice
    const before = await versions();
    const again = await runModelImport(nats.nc, path, flags);
    expect(again.differing).toBe(0);
    expect(again.pushes).toBe(0);
    expect(await versions()).toEqual(before);

    // kill -9 both shards; restarted from their logs and checkpoints, the rows are the file's
    await Promise.all(shards.map((p) => kill9(p)));
    await Promise.all([0, 1].map((i) => startRole('shard', shardOpts(i))));
    await expectImported();

    // a file whose emb rows have the wrong dim is refused whole, naming the table; nothing moves
    const bad: WarmStartFile = {
      tables: new Map([...file.tables, ['emb', { kind: 'sparse', dim: 3, keys, values: values(n * 3, 5) }]]),
      metadata: {},
    };
    const badPath = join(dir, 'bad.safetensors');
    writeFileSync(badPath, encodeWarmStart(bad));
    const v = await versions();
    const refused = await cli(badPath);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/\[CONFIG\] .*table "emb": rows of dim 3 in the file, 4 in the model/);
    // and one that is not a safetensors file at all
    writeFileSync(badPath, 'not a model');
    await expect(runModelImport(nats.nc, badPath, flags)).rejects.toThrow(/warm-start file: header length/);
    expect(await versions()).toEqual(v);
    await expectImported();
  });
});
