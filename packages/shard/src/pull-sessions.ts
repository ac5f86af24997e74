import { FreshetError, type PullRequest, type PushRequest } from '@freshet/protocol';

interface Session {
  tables: Map<number, Uint32Array>;
  bytes: number;
  at: number;
}

/** What a shard's pull sessions hold and how they were used (status and metrics). */
export interface PullSessionStats {
  sessions: number;
  bytes: number;
  /** Pushes whose keys came from their pull. */
  resolved: number;
  /** Pushes that named a session this shard no longer held (answered SESSION_UNKNOWN). */
  unknown: number;
  /** Sessions dropped for age or to stay within the byte budget before their push came. */
  dropped: number;
}

/**
 * The keys of recent pulls, so a batch's push can name its pull instead of sending the keys
 * again (8 bytes a row, ~20% of a binary16 push). Bounded in bytes and age: a session whose
 * push never comes (the worker died, the batch was dropped) is forgotten, and so is the oldest
 * one when the budget is full. Forgetting is always safe: the push is answered SESSION_UNKNOWN
 * and the worker sends it again with its keys. Nothing here is durable; the write-ahead log
 * gets the push with its keys filled in.
 */
export class PullSessions {
  private readonly byId = new Map<string, Session>();
  private bytes = 0;
  private resolved = 0;
  private unknown = 0;
  private dropped = 0;

  constructor(
    private readonly maxBytes: number,
    private readonly ttlMs: number,
  ) {}

  get enabled(): boolean {
    return this.maxBytes > 0;
  }

  /**
   * Keeps a pull's keys (copied: the request buffer is the connection's). Returns whether it
   * did, which the pull reply tells the worker.
   */
  remember(req: PullRequest, now = Date.now()): boolean {
    if (!this.enabled || req.session === undefined || req.tables.length === 0) return false;
    let bytes = 0;
    for (const t of req.tables) bytes += t.keys.byteLength;
    if (bytes > this.maxBytes) return false;
    this.forget(req.session);
    while (this.bytes + bytes > this.maxBytes) {
      const oldest = this.byId.keys().next();
      if (oldest.done) break;
      this.forget(oldest.value);
      this.dropped++;
    }
    const tables = new Map<number, Uint32Array>();
    for (const t of req.tables) tables.set(t.t, t.keys.slice());
    this.byId.set(req.session, { tables, bytes, at: now });
    this.bytes += bytes;
    return true;
  }

  /**
   * Fills in the keys of a push's keyless tables from its pull. The session stays until
   * {@link release} (the push applied) or its age runs out, so a push refused for a passing
   * reason (NOT_OWNER, a rolled-back step) can be retried as it was sent. Throws SESSION_UNKNOWN
   * when the session is gone, WRONG_LENGTH or BAD_REQUEST when the push does not match it.
   */
  resolve(req: PushRequest): PushRequest {
    if (!req.tables.some((t) => t.keyless)) return req;
    const id = req.session!;
    const s = this.byId.get(id);
    if (!s) {
      this.unknown++;
      throw new FreshetError('SESSION_UNKNOWN', `pull session ${id} is not held here: send the keys`);
    }
    const tables = req.tables.map((t) => {
      if (!t.keyless) return t;
      const keys = s.tables.get(t.t);
      if (!keys) throw new FreshetError('BAD_REQUEST', `pull session ${id} did not pull table ${t.t}`);
      if (keys.length !== t.counts.length * 2)
        throw new FreshetError(
          'WRONG_LENGTH',
          `push table ${t.t}: ${t.counts.length} rows, its pull in session ${id} had ${keys.length / 2}`,
        );
      // as it came (its wire encoding included), with the keys filled in
      return { ...t, keys, keyless: undefined };
    });
    this.resolved++;
    // the completed push stands alone (what the log keeps)
    return { ...req, session: undefined, tables };
  }

  /** Forgets a session whose push was applied (its retries are answered as duplicates). */
  release(id: string | undefined): void {
    if (id !== undefined) this.forget(id);
  }

  /** Forgets sessions older than the time-to-live (the maintenance tick). */
  sweep(now = Date.now()): void {
    for (const [id, s] of this.byId) {
      // insertion order is age order (a re-pull re-inserts)
      if (now - s.at < this.ttlMs) break;
      this.forget(id);
      this.dropped++;
    }
  }

  stats(): PullSessionStats {
    return {
      sessions: this.byId.size,
      bytes: this.bytes,
      resolved: this.resolved,
      unknown: this.unknown,
      dropped: this.dropped,
    };
  }

  private forget(id: string): void {
    const s = this.byId.get(id);
    if (!s) return;
    this.byId.delete(id);
    this.bytes -= s.bytes;
  }
}
