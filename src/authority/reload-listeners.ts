// Subscribers to an authority's reload (or renewal) events: the files, vault-kv and
// vault-intermediate authorities report every attempt to them. A listener that throws is
// logged and does not keep the others from hearing about it.

export class ReloadListeners<E> {
  private readonly listeners = new Set<(e: E) => void>();

  /** `warn` gets "<what> threw: <message>" for a listener that throws. */
  constructor(
    private readonly what: string,
    private readonly warn: (message: string) => void,
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
        this.warn(`${this.what} threw: ${(err as Error).message}`);
      }
    }
  }
}
