// Replacing a file atomically: the data goes to a temporary file in the same directory,
// created with the final mode and chmod'ed to exactly that mode (the umask must neither
// narrow nor widen it), then renamed over the target. A reader sees the old content or the
// new, never half a file, and a private key is never readable by others, not even briefly.
import { randomBytes } from "node:crypto";
import { chmodSync, promises as fs, renameSync, writeFileSync } from "node:fs";
import path from "node:path";

/** Synchronous: temp file `<path>.tmp-<pid>`, written with `mode`, chmod `mode`, rename. */
export function writeFileAtomicSync(file: string, data: string, mode: number): void {
  const tmp = `${file}.tmp-${process.pid}`;
  writeFileSync(tmp, data, { mode });
  chmodSync(tmp, mode);
  renameSync(tmp, file);
}

/**
 * Asynchronous and durable: a fresh hidden temp file (exclusive create with `mode`), chmod
 * `mode`, fsync, rename; the temp file is removed when the rename fails.
 */
export async function writeFileAtomic(file: string, data: string, mode: number): Promise<void> {
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.${randomBytes(6).toString("hex")}.tmp`);
  const fh = await fs.open(tmp, "wx", mode);
  try {
    await fh.writeFile(data);
    // The umask may have narrowed or (for 0644 files) the caller wants exactly `mode`.
    await fh.chmod(mode);
    await fh.sync();
  } finally {
    await fh.close();
  }
  try {
    await fs.rename(tmp, file);
  } catch (err) {
    await fs.rm(tmp, { force: true });
    throw err;
  }
}
