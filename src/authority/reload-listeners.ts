// Subscribers to an authority's reload (or renewal) events: the files, vault-kv and
// vault-intermediate authorities report every attempt to them. A listener that throws is
// logged and does not keep the others from hearing about it.
import type { Log } from "../log/logger.js";

export class ReloadListeners<E> {
  private readonly listeners = new Set<(e: E) => void>();

  /** A listener that throws is logged at warn on `log()` (a function: the owner's logger may be set later). */
  constructor(
    private readonly what: string,
    private readonly log: () => Log,
  ) {}

  /** Returns an unsubscribe function. */
  add(listener: (e: E) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  emit(e: E): void {
    for (const l of this.listeners) {
      try {
        l(e);
      } catch (err) {
        this.log().warn({ err: (err as Error).message }, `${this.what} threw`);
      }
    }
  }
}
