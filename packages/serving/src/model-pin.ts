import type { KvEntry, NatsConnection } from 'nats';
import { z } from 'zod';
import type { ActorLog } from '@freshet/nats';
import { KvWatch } from './kv-watch.js';

/**
 * The cluster-KV key of the model pin (docs/model-versions.md). A worker's guard creates it when
 * the progressive logloss degrades past its bound; `freshet model unpin` and `freshet model
 * rollback` delete it. Workers write the same key by name (they do not depend on serving).
 */
export const modelPinKey = 'model-pin';

/** Why serving is pinned: what the guard saw. */
export const modelPinSchema = z.object({
  /** When the guard tripped (ms since epoch). */
  since: z.number(),
  reason: z.string(),
  /** Mean progressive logloss of the window that tripped it. */
  logloss: z.number(),
  /** Mean logloss of the baseline windows it was compared with. */
  baseline: z.number(),
  /** The actor that tripped it (a worker id, or `cli` for `freshet model pin`). */
  by: z.string(),
});
export type ModelPin = z.infer<typeof modelPinSchema>;

export interface ModelPinFollowerOptions {
  cluster: string;
  pin: (p: ModelPin) => void;
  unpin: () => void;
  log: ActorLog;
}

/**
 * Watches the pin key: its current value at start (a node started while pinned serves the
 * weights it loads and stays there), then each change. Without the KV bucket yet it tries again
 * every `retryMs`. A malformed record pins too (it says it could not be read): a guard that
 * tripped must not be ignored because of its wording.
 */
export class ModelPinFollower {
  current: ModelPin | null = null;
  private readonly watch: KvWatch;

  constructor(
    nc: NatsConnection,
    private readonly o: ModelPinFollowerOptions,
  ) {
    this.watch = new KvWatch(nc, {
      cluster: o.cluster,
      key: modelPinKey,
      what: 'model pin',
      onEntry: (e) => this.onEntry(e),
      log: o.log,
    });
  }

  start(retryMs = 2000): Promise<void> {
    return this.watch.start(retryMs);
  }

  stop(): Promise<void> {
    return this.watch.stop();
  }

  private onEntry(e: KvEntry): void {
    if (e.operation !== 'PUT') {
      if (!this.current) return;
      this.current = null;
      this.o.log('info', 'model unpinned: following the shards again', {});
      this.o.unpin();
      return;
    }
    let p: ModelPin;
    try {
      p = modelPinSchema.parse(JSON.parse(new TextDecoder().decode(e.value)));
    } catch (err) {
      p = {
        since: Date.now(),
        reason: `unreadable pin record (${String(err)})`,
        logloss: 0,
        baseline: 0,
        by: '',
      };
    }
    const was = this.current;
    this.current = p;
    if (!was) {
      this.o.log('warn', 'model pinned: serving keeps its current weights', { ...p });
      this.o.pin(p);
    }
  }
}
