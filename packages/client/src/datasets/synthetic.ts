import type { FeedbackEventInput } from '@freshet/protocol';

/** Options of the synthetic world. */
export interface SyntheticOptions {
  seed?: number;
  users?: number;
  items?: number;
  /** Latent taste dimensions. */
  dim?: number;
  /** Items shown per request. */
  slate?: number;
  /** Requests to generate. */
  requests?: number;
  startTs?: number;
  /** Virtual time between requests. */
  intervalMs?: number;
  /** Event time at which every user's preferences change (the drift). Default: never. */
  driftAtTs?: number;
  /** Logit scale: how sharp preferences are. */
  sharpness?: number;
  /** Base click logit (sets the average click rate). */
  bias?: number;
  idPrefix?: string;
}

/** mulberry32: a small, fast, seedable PRNG; the world is a pure function of its seed. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function gaussian(rnd: () => number): number {
  const u = Math.max(rnd(), 1e-12);
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * rnd());
}

/**
 * Users and items with latent tastes; a user clicks an item with probability
 * σ(sharpness · ⟨u, v⟩ / √dim + bias). At `driftAtTs` every user's taste vector is replaced by a
 * fresh one, so a model trained before the drift is wrong after it and has to recover. Items carry
 * a category feature (their strongest latent dimension), users a segment, so a model can learn.
 */
export class SyntheticWorld {
  readonly o: Required<Omit<SyntheticOptions, 'driftAtTs'>> & { driftAtTs: number };
  private readonly before: Float64Array[];
  private readonly after: Float64Array[];
  private readonly itemVecs: Float64Array[];

  constructor(options: SyntheticOptions = {}) {
    this.o = {
      seed: 1,
      users: 200,
      items: 100,
      dim: 4,
      slate: 5,
      requests: 10_000,
      startTs: Date.UTC(2024, 0, 1),
      intervalMs: 100,
      sharpness: 3,
      bias: -1.5,
      idPrefix: 'syn',
      ...options,
      driftAtTs: options.driftAtTs ?? Infinity,
    };
    const rnd = prng(this.o.seed);
    const vec = () => Float64Array.from({ length: this.o.dim }, () => gaussian(rnd));
    this.itemVecs = Array.from({ length: this.o.items }, vec);
    this.before = Array.from({ length: this.o.users }, vec);
    this.after = Array.from({ length: this.o.users }, vec);
  }

  /** The true click probability of user u on item i at event time ts (for evaluation). */
  clickProbability(user: number, item: number, ts: number): number {
    const u = (ts >= this.o.driftAtTs ? this.after : this.before)[user]!;
    const v = this.itemVecs[item]!;
    let dot = 0;
    for (let k = 0; k < this.o.dim; k++) dot += u[k]! * v[k]!;
    const z = (this.o.sharpness * dot) / Math.sqrt(this.o.dim) + this.o.bias;
    return 1 / (1 + Math.exp(-z));
  }

  /** The category feature of an item: its strongest latent dimension and sign. */
  itemCategory(item: number): string {
    const v = this.itemVecs[item]!;
    let best = 0;
    for (let k = 1; k < v.length; k++) if (Math.abs(v[k]!) > Math.abs(v[best]!)) best = k;
    return `${v[best]! >= 0 ? '+' : '-'}${best}`;
  }

  /** Impressions and clicks in time order; deterministic by seed. */
  *events(): Generator<FeedbackEventInput> {
    const o = this.o;
    const rnd = prng(o.seed ^ 0x9e3779b9);
    for (let r = 0; r < o.requests; r++) {
      const ts = o.startTs + r * o.intervalMs;
      const user = Math.floor(rnd() * o.users);
      const request = `${o.idPrefix}-r${r}`;
      const shown = new Set<number>();
      while (shown.size < Math.min(o.slate, o.items)) shown.add(Math.floor(rnd() * o.items));
      let pos = 0;
      const clicks: FeedbackEventInput[] = [];
      for (const item of shown) {
        yield {
          kind: 'impression',
          id: `${request}-i${item}`,
          ts,
          user: `u${user}`,
          request,
          item: `i${item}`,
          position: pos++,
          features: { category: this.itemCategory(item) },
        };
        if (rnd() < this.clickProbability(user, item, ts)) {
          clicks.push({
            kind: 'click',
            id: `${request}-c${item}`,
            ts: ts + 1,
            user: `u${user}`,
            request,
            item: `i${item}`,
          });
        }
      }
      yield* clicks;
    }
  }
}

/** Shorthand: the events of a {@link SyntheticWorld}. */
export function syntheticEvents(options: SyntheticOptions = {}): Generator<FeedbackEventInput> {
  return new SyntheticWorld(options).events();
}
