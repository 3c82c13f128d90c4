// One teardown for whatever a command starts (the CA server, the agent), written once: each
// thing started pushes how to stop it, and close() runs them last-first (Go's `defer`, as
// istio-csr's cmd/app does it), both at shutdown and when a later start step fails. A closer
// that fails is reported and the others still run, so one broken part cannot keep a port, a
// socket file or the data directory lock held.

export type Closer = () => Promise<void> | void;

export class CloserStack {
  private readonly closers: Closer[] = [];
  private closing: Promise<void> | undefined;
  private failed: { err: unknown } | undefined;

  constructor(private readonly onError: (err: unknown) => void = () => undefined) {}

  /** Runs `closer` at close(), before everything deferred earlier. */
  defer(closer: Closer): void {
    if (this.closing) {
      // Started while closing (a start attempt finishing late): stop it at once.
      void Promise.resolve()
        .then(closer)
        .catch((err: unknown) => this.onError(err));
      return;
    }
    this.closers.push(closer);
  }

  /** What `start` returns; when it fails, first closes everything deferred so far (a start step left half done). */
  async unlessStartFails<T>(start: () => Promise<T>): Promise<T> {
    try {
      return await start();
    } catch (err) {
      await this.close();
      throw err;
    }
  }

  /** Runs every closer once, last deferred first; later calls wait for the same run. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      for (const c of this.closers.splice(0).reverse()) {
        try {
          await c();
        } catch (err) {
          this.failed ??= { err };
          this.onError(err);
        }
      }
    })();
    return this.closing;
  }

  /**
   * close(), then rejects with the first closer's error: for a command whose exit status
   * says its teardown failed (the other closers have still run).
   */
  async closeOrThrow(): Promise<void> {
    await this.close();
    if (this.failed) throw this.failed.err;
  }
}
