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
  constructor(private readonly out: (line: string) => void) {}

  ok(what: string): void {
    this.add({ ok: true, what });
  }
  fail(what: string, fix: string): void {
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
}
