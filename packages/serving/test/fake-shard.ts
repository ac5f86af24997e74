import type { NatsConnection, Subscription } from 'nats';
import {
  decodeSnapshotRequest,
  encodeDelta,
  encodeSnapshotPage,
  shardOfDense,
  shardOfKey,
  subjects,
  type DeltaTable,
  type ModelSpec,
} from '@freshet/protocol';

/**
 * A stand-in parameter-server shard for tests: it holds rows, answers snapshot page requests on
 * subjects(cluster).snapshot(shard) and publishes deltas on .delta(shard) with the same codecs as
 * the real shard. Tests drive it: set rows, publish (or skip) deltas, evict, restart the sequence.
 */
export class FakeShard {
  /** tables[t]: key "lo:hi" → row values. */
  readonly rows: Map<string, Float32Array>[];
  seq = 0;
  version = 0;
  snapshotRequests = 0;
  /** Awaited before each page reply (lets a test publish deltas mid-snapshot). */
  beforePage: ((page: number) => Promise<void>) | undefined;
  private sub: Subscription | undefined;
  private readonly s;

  constructor(
    private readonly nc: NatsConnection,
    cluster: string,
    readonly shard: number,
    readonly nShards: number,
    readonly spec: ModelSpec,
  ) {
    this.s = subjects(cluster);
    this.rows = spec.tables.map(() => new Map());
  }

  async start(): Promise<void> {
    let pageNo = 0;
    this.sub = this.nc.subscribe(this.s.snapshot(this.shard), {
      callback: (_err, msg) => {
        const req = decodeSnapshotRequest(msg.data);
        this.snapshotRequests++;
        const run = async () => {
          await this.beforePage?.(pageNo++);
          const dim = this.spec.tables[req.t]!.dim;
          const entries = [...this.rows[req.t]!.entries()].sort(([a], [b]) => (a < b ? -1 : 1));
          const slice = entries.slice(req.cursor, req.cursor + req.limit);
          const keys = new Uint32Array(slice.length * 2);
          const values = new Float32Array(slice.length * dim);
          slice.forEach(([k, v], i) => {
            const [lo, hi] = k.split(':').map(Number);
            keys[2 * i] = lo!;
            keys[2 * i + 1] = hi!;
            values.set(v, i * dim);
          });
          const end = req.cursor + slice.length;
          msg.respond(
            encodeSnapshotPage({
              t: req.t,
              dim,
              version: this.version,
              seq: this.seq,
              next: end < entries.length ? end : null,
              keys,
              values,
            }),
          );
        };
        void run();
      },
    });
    await this.nc.flush();
  }

  stop(): void {
    this.sub?.unsubscribe();
  }

  /** Whether this shard owns a key of a table (sparse) or the table (dense). */
  owns(t: number, lo: number, hi: number): boolean {
    const spec = this.spec.tables[t]!;
    if (spec.kind === 'dense') return shardOfDense(spec, this.nShards) === this.shard;
    return shardOfKey(t, lo, hi, this.nShards) === this.shard;
  }

  /** Sets rows in the shard's state without publishing. */
  set(t: number, rows: [number, number, Float32Array][]): void {
    for (const [lo, hi, v] of rows) this.rows[t]!.set(`${lo >>> 0}:${hi >>> 0}`, v);
  }

  /**
   * Applies rows and evictions to the state and makes the next delta; `publish: false` loses it
   * (a gap for subscribers). Returns the delta's seq.
   */
  update(
    changes: { t: number; set?: [number, number, Float32Array][]; dead?: [number, number][] }[],
    opts: { publish?: boolean; eventTs?: number[] } = {},
  ): number {
    this.seq++;
    this.version += 1;
    const tables: DeltaTable[] = [];
    for (const c of changes) {
      const dim = this.spec.tables[c.t]!.dim;
      const set = c.set ?? [];
      const dead = c.dead ?? [];
      this.set(c.t, set);
      for (const [lo, hi] of dead) this.rows[c.t]!.delete(`${lo >>> 0}:${hi >>> 0}`);
      const keys = new Uint32Array(set.length * 2);
      const values = new Float32Array(set.length * dim);
      set.forEach(([lo, hi, v], i) => {
        keys[2 * i] = lo;
        keys[2 * i + 1] = hi;
        values.set(v, i * dim);
      });
      const deadKeys = new Uint32Array(dead.flatMap(([lo, hi]) => [lo, hi]));
      tables.push({ t: c.t, dim, keys, values, deadKeys });
    }
    if (opts.publish !== false) {
      this.nc.publish(
        this.s.delta(this.shard),
        encodeDelta({
          shard: this.shard,
          seq: this.seq,
          version: this.version,
          ts: Date.now(),
          eventTs: opts.eventTs ?? [],
          tables,
        }),
      );
    }
    return this.seq;
  }

  /** Simulates a restart: the delta sequence starts over at 1. */
  restartSequence(): void {
    this.seq = 0;
  }
}

/** A key of table `t` that shard `shard` of `n` owns, searching from `from`. */
export function keyOwnedBy(t: number, shard: number, n: number, from = 1): [number, number] {
  for (let lo = from; ; lo++) if (shardOfKey(t, lo, 7, n) === shard) return [lo, 7];
}
