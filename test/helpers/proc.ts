// A test peer's process (kube-apiserver, etcd, pilot-agent, istiod): output straight to a
// log file, unref'd (a harness left running never keeps the test process alive), killed
// by `leftovers` if the test process exits without stopping it.
import { spawn, type ChildProcess } from "node:child_process";
import { appendFileSync, closeSync, openSync } from "node:fs";
import type { Leftovers } from "./leftovers.js";

export interface PeerProcess {
  child: ChildProcess;
  logPath: string;
  exited: Promise<number | null>;
  /** The exit code once exited (-1: could not be spawned), else undefined. */
  exitCode(): number | null | undefined;
  /** SIGTERM, then SIGKILL after `graceMs`; resolves once exited. */
  stop(graceMs: number): Promise<void>;
}

export function startPeerProcess(
  bin: string,
  args: string[],
  logPath: string,
  leftovers: Leftovers,
  opts: { cwd?: string; env?: NodeJS.ProcessEnv } = {},
): PeerProcess {
  const fd = openSync(logPath, "a");
  let child: ChildProcess;
  try {
    child = spawn(bin, args, { ...opts, stdio: ["ignore", fd, fd] });
  } finally {
    closeSync(fd);
  }
  child.unref();
  leftovers.child(child);
  let code: number | null | undefined;
  const exited = new Promise<number | null>((res) => {
    child.once("exit", (c) => {
      code = c;
      res(c);
    });
    child.once("error", (err) => {
      appendFileSync(logPath, `spawn ${bin}: ${err.message}\n`);
      code = -1;
      res(-1);
    });
  });
  return {
    child,
    logPath,
    exited,
    exitCode: () => code,
    async stop(graceMs) {
      if (code !== undefined) return;
      child.kill("SIGTERM");
      const t = setTimeout(() => child.kill("SIGKILL"), graceMs);
      await exited;
      clearTimeout(t);
    },
  };
}
