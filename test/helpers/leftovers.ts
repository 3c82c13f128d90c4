// What a test harness started (child processes, temp dirs), killed and removed
// synchronously if the test process exits without the harness's stop(): a failed
// test, an uncaught error or exit() must not leave servers or key material behind.
import type { ChildProcess } from "node:child_process";
import { rmSync } from "node:fs";

export class Leftovers {
  private readonly children = new Set<ChildProcess>();
  private readonly dirs = new Set<string>();
  private hooked = false;

  /** `keepEnv`: when this environment variable is set, directories are kept for debugging. */
  constructor(private readonly keepEnv: string) {}

  child(c: ChildProcess): void {
    this.hook();
    this.children.add(c);
    c.once("exit", () => this.children.delete(c));
  }

  dir(d: string): void {
    this.hook();
    this.dirs.add(d);
  }

  /** The harness removed `d` itself. */
  forgetDir(d: string): void {
    this.dirs.delete(d);
  }

  private hook(): void {
    if (this.hooked) return;
    this.hooked = true;
    process.once("exit", () => {
      for (const c of this.children) c.kill("SIGKILL");
      if (!process.env[this.keepEnv]) for (const d of this.dirs) rmSync(d, { recursive: true, force: true });
    });
  }
}
