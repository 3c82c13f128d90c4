// Creating a directory and its missing parents, with a bounded failure. Node's own
// `mkdir(..., { recursive: true })` never returns for some paths (under /proc it retries
// forever at 100% CPU), so the walk up to the first existing ancestor is done here.
import { mkdirSync, promises as fs, statSync } from "node:fs";
import path from "node:path";
import { fsReason } from "./errors.js";

export class MakeDirError extends Error {
  override name = "MakeDirError";
}

function code(err: unknown): string | undefined {
  return (err as NodeJS.ErrnoException).code;
}

/** The directories to create, outermost first; throws when an ancestor is not a directory. */
function missingDirs(dir: string, isDir: (p: string) => boolean | undefined): string[] {
  const missing: string[] = [];
  for (let p = path.resolve(dir); ;) {
    const d = isDir(p);
    if (d === true) return missing;
    if (d === false) throw new MakeDirError(`${p} exists and is not a directory`);
    missing.unshift(p);
    const parent = path.dirname(p);
    if (parent === p) return missing;
    p = parent;
  }
}

function statDir(p: string): boolean | undefined {
  try {
    return statSync(p).isDirectory();
  } catch (err) {
    const c = code(err);
    if (c === "ENOENT") return undefined;
    if (c === "ENOTDIR") return false;
    throw new MakeDirError(`cannot inspect ${p}: ${fsReason(err)}`);
  }
}

/** Creates `dir` and its missing parents with `mode`; a clear MakeDirError when it cannot. */
export function makeDirSync(dir: string, mode: number): void {
  for (const p of missingDirs(dir, statDir)) {
    try {
      mkdirSync(p, { mode });
    } catch (err) {
      if (code(err) === "EEXIST" && statDir(p)) continue;
      throw new MakeDirError(`cannot create the directory ${p}: ${fsReason(err)}`);
    }
  }
}

/** Asynchronous makeDirSync (the walk is a few stat calls; the creations are awaited). */
export async function makeDir(dir: string, mode: number): Promise<void> {
  const missing = missingDirs(dir, statDir);
  for (const p of missing) {
    try {
      await fs.mkdir(p, { mode });
    } catch (err) {
      if (code(err) === "EEXIST" && statDir(p)) continue;
      throw new MakeDirError(`cannot create the directory ${p}: ${fsReason(err)}`);
    }
  }
}
