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
  /** Event time at which users' preferences change (the drift). Default: never. */
  driftAtTs?: number;
  /** Share of users whose taste changes at the drift (default 1: all of them). */
  driftFraction?: number;
  /** How a drifting user's taste changes: a fresh random vector (default) or its opposite. */
  driftMode?: 'fresh' | 'flip';
  /** Logit scale: how sharp preferences are. */
  sharpness?: number;
  /** Base click logit (sets the average click rate). */
  bias?: number;
  idPrefix?: string;
}

/** One shown item of a synthetic request. */
export interface SyntheticShown {
  item: number;
  position: number;
  clicked: boolean;
}

/** A labelled synthetic impression (the shape of @freshet/model's Example). */
export interface SyntheticExample {
  features: { user: string; item: string; position: number; category: string };
  label: number;
  ts: number;
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
      driftFraction: 1,
      driftMode: 'fresh',
      ...options,
      driftAtTs: options.driftAtTs ?? Infinity,
    };
    const rnd = prng(this.o.seed);
    const vec = () => Float64Array.from({ length: this.o.dim }, () => gaussian(rnd));
    this.itemVecs = Array.from({ length: this.o.items }, vec);
    this.before = Array.from({ length: this.o.users }, vec);
    this.after = Array.from({ length: this.o.users }, vec);
    // Which users drift: a seeded choice of round(fraction · users), the rest keep their taste.
    const pick = prng(this.o.seed ^ 0x5bd1e995);
    const order = Array.from({ length: this.o.users }, (_, u) => ({ u, r: pick() })).sort(
      (a, b) => a.r - b.r,
    );
    const drifting = Math.round(Math.min(1, Math.max(0, this.o.driftFraction)) * this.o.users);
    order.forEach(({ u }, i) => {
      if (i >= drifting) this.after[u] = this.before[u]!;
      else if (this.o.driftMode === 'flip') this.after[u] = this.before[u]!.map((x) => -x);
    });
  }

  /** Whether user u's taste changes at the drift. */
  drifts(user: number): boolean {
    return this.after[user] !== this.before[user];
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

  /** Requests in time order: who saw what, at which position, and what they clicked. */
  private *requests(): Generator<{ r: number; ts: number; user: number; shown: SyntheticShown[] }> {
    const o = this.o;
    const rnd = prng(o.seed ^ 0x9e3779b9);
    for (let r = 0; r < o.requests; r++) {
      const ts = o.startTs + r * o.intervalMs;
      const user = Math.floor(rnd() * o.users);
      const items = new Set<number>();
      while (items.size < Math.min(o.slate, o.items)) items.add(Math.floor(rnd() * o.items));
      const shown: SyntheticShown[] = [];
      let position = 0;
      for (const item of items) {
        const clicked = rnd() < this.clickProbability(user, item, ts);
        shown.push({ item, position: position++, clicked });
      }
      yield { r, ts, user, shown };
    }
  }

  /** Impressions and clicks in time order; deterministic by seed. */
  *events(): Generator<FeedbackEventInput> {
    const o = this.o;
    for (const { r, ts, user, shown } of this.requests()) {
      const request = `${o.idPrefix}-r${r}`;
      for (const s of shown) {
        yield {
          kind: 'impression',
          id: `${request}-i${s.item}`,
          ts,
          user: `u${user}`,
          request,
          item: `i${s.item}`,
          position: s.position,
          features: { category: this.itemCategory(s.item) },
        };
      }
      for (const s of shown) {
        if (!s.clicked) continue;
        yield {
          kind: 'click',
          id: `${request}-c${s.item}`,
          ts: ts + 1,
          user: `u${user}`,
          request,
          item: `i${s.item}`,
        };
      }
    }
  }

  /**
   * The labelled examples a worker joins from {@link events} (one per impression, 1 when
   * clicked), in impression order, with the features the joiner gives them: user, item,
   * position and the impression's category.
   */
  *labelled(): Generator<SyntheticExample> {
    for (const { ts, user, shown } of this.requests()) {
      for (const s of shown) {
        yield {
          features: {
            user: `u${user}`,
            item: `i${s.item}`,
            position: s.position,
            category: this.itemCategory(s.item),
          },
          label: s.clicked ? 1 : 0,
          ts,
        };
      }
    }
  }
}

/** Shorthand: the events of a {@link SyntheticWorld}. */
export function syntheticEvents(options: SyntheticOptions = {}): Generator<FeedbackEventInput> {
  return new SyntheticWorld(options).events();
}
