import { forgottenUserHash, forgottenUserPrefix } from '@freshet/protocol';

/**
 * The users this worker no longer learns from (`freshet user forget`, docs/privacy.md), held as
 * the hashes the cluster KV records (`forgotten.<hash>`), never as ids. Events of such a user are
 * acked and counted, not dead-lettered: the dead-letter stream would keep a copy of the very data
 * the deletion is about.
 */
export class ForgottenUsers {
  private readonly hashes = new Set<string>();
  /** Events of forgotten users dropped at admission. */
  droppedEvents = 0;

  get size(): number {
    return this.hashes.size;
  }

  has(user: string): boolean {
    return this.hashes.size > 0 && this.hashes.has(forgottenUserHash(user));
  }

  add(user: string): void {
    this.hashes.add(forgottenUserHash(user));
  }

  /**
   * Loads every `forgotten.<hash>` key of the cluster KV (at start: replays see them too).
   * `keys` must list them completely (`kvKeys` of @freshet/nats: `kv.keys()` can stop early, and
   * a user missed here would be trained on again). Deletions are never undone, so a key listed
   * with a delete marker still counts.
   */
  async load(keys: (filter: string) => Promise<string[]>): Promise<number> {
    const listed = await keys(`${forgottenUserPrefix}>`);
    for (const key of listed) this.hashes.add(key.slice(forgottenUserPrefix.length));
    return listed.length;
  }
}
