// One owner per directory: an exclusively created lock file holding the owner's pid. A lock
// whose process is gone (crash, kill -9) is taken over; a live owner is named in the error.
import { closeSync, openSync, readFileSync, rmSync, writeSync } from "node:fs";
import path from "node:path";
import { fsReason } from "./errors.js";

export class DirLockedError extends Error {
  override name = "DirLockedError";
  constructor(
    message: string,
    readonly pid: number,
  ) {
    super(message);
  }
}

// Directories this process holds: a second lock from the same process is refused too.
const held = new Set<string>();

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM"; // exists, owned by someone else
  }
}

/**
 * Locks `dir` (which must exist) with `<dir>/<name>`; returns the release function.
 * Throws DirLockedError naming the owner's pid when another live process holds it.
 */
export function lockDir(dir: string, name: string, what: string): () => void {
  const file = path.join(dir, name);
  if (held.has(file))
    throw new DirLockedError(
      `${dir} is already in use by ${what} in this process (pid ${process.pid})`,
      process.pid,
    );
  for (let attempt = 0; ; attempt++) {
    try {
      const fd = openSync(file, "wx", 0o600);
      try {
        writeSync(fd, `${process.pid}\n`);
      } finally {
        closeSync(fd);
      }
      held.add(file);
      return () => {
        if (!held.delete(file)) return;
        rmSync(file, { force: true });
      };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST" || attempt > 0) {
        if (err instanceof DirLockedError) throw err;
        throw new Error(`cannot create the lock file ${file}: ${fsReason(err)}`, { cause: err });
      }
      let pid = NaN;
      try {
        pid = Number.parseInt(readFileSync(file, "utf8"), 10);
      } catch {
        /* vanished or unreadable: treated as stale */
      }
      if (Number.isInteger(pid) && pid > 0 && pid !== process.pid && alive(pid))
        throw new DirLockedError(
          `${dir} is in use by ${what} with pid ${pid} (lock file ${file}): stop that process, or give this one another directory`,
          pid,
        );
      rmSync(file, { force: true }); // its owner is gone
    }
  }
}
