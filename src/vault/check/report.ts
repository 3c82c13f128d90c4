// One diagnosis line: ok, or FAIL with the fix. Lines print as they come so a
// hanging step is visible.

export interface CheckLine {
  ok: boolean;
  what: string;
  /** Command or setting that fixes a failure. */
  fix?: string | undefined;
}

export class CheckReport {
  readonly lines: CheckLine[] = [];
  constructor(
    private readonly out: (line: string) => void,
    /** The check's cancellation: a failure seen once it is aborted is that, not a finding. */
    private readonly signal?: AbortSignal,
  ) {}

  ok(what: string): void {
    this.add({ ok: true, what });
  }
  /** Records a finding; once the check is cancelled, throws the cancellation instead (it ends the check). */
  fail(what: string, fix: string): void {
    this.signal?.throwIfAborted();
    this.add({ ok: false, what, fix });
  }
  private add(l: CheckLine): void {
    this.lines.push(l);
    this.out(l.ok ? `ok    ${l.what}` : `FAIL: ${l.what} — fix: ${l.fix}`);
  }
  get failed(): number {
    return this.lines.filter((l) => !l.ok).length;
  }
  /** Closing line; returns the process exit code. */
  finish(): number {
    const n = this.lines.length;
    this.out(this.failed === 0 ? `all ${n} checks passed` : `${this.failed} of ${n} checks failed`);
    return this.failed === 0 ? 0 : 1;
  }
  /** Closing line of a cancelled check (exit code 1: it did not pass). */
  cancelled(reason: unknown): number {
    const why = reason instanceof Error && reason.name !== "AbortError" ? `: ${reason.message}` : "";
    this.out(
      `vault check cancelled${why}, after ${this.lines.length} check(s) (${this.failed} failed); the rest was not checked`,
    );
    return 1;
  }
}
