// `meshvault server -c <yaml>` as its own process (the wiring users run), ready when /readyz
// says so. Used by the multi-cluster, replica and rotation tests.
import type { ChildProcess } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { stringify } from "yaml";
import { spawnCli } from "./cli.js";
import { Leftovers } from "./leftovers.js";
import { freePort } from "./ports.js";

const leftovers = new Leftovers("MESHVAULT_KEEP_TEST_DIRS");

export interface ServerProcess {
  name: string;
  grpc: string;
  http: string;
  dataDir: string;
  configFile: string;
  child: ChildProcess;
  /** stdout + stderr so far (JSON log lines). */
  output(): string;
  stop(): Promise<void>;
}

/** Writes `config` (plus listen addresses and dataDir under `dir`) and starts the server. */
export async function startServerProcess(
  name: string,
  dir: string,
  config: Record<string, unknown>,
  env: Record<string, string> = {},
  readyMs = 60_000,
): Promise<ServerProcess> {
  const grpc = `127.0.0.1:${await freePort()}`;
  const http = `127.0.0.1:${await freePort()}`;
  const dataDir = join(dir, `data-${name}`);
  const configFile = join(dir, `${name}.yaml`);
  writeFileSync(
    configFile,
    stringify({ dataDir, listen: { grpc, http }, log: { level: "info" }, ...config }),
  );
  const child = spawnCli(["server", "-c", configFile], {
    env: { ...process.env, ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  leftovers.child(child);
  let out = "";
  child.stdout?.on("data", (b: Buffer) => (out += b.toString()));
  child.stderr?.on("data", (b: Buffer) => (out += b.toString()));
  const stop = async (): Promise<void> => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise<void>((r) => child.once("exit", () => r()));
    child.kill("SIGTERM");
    const t = setTimeout(() => child.kill("SIGKILL"), 5000);
    await exited;
    clearTimeout(t);
  };
  const deadline = Date.now() + readyMs;
  for (;;) {
    if (child.exitCode !== null)
      throw new Error(`server ${name} exited with ${child.exitCode}:\n${out.slice(-3000)}`);
    const ok = await fetch(`http://${http}/readyz`)
      .then((r) => r.status === 200)
      .catch(() => false);
    if (ok) break;
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`server ${name} not ready after ${readyMs} ms:\n${out.slice(-3000)}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return { name, grpc, http, dataDir, configFile, child, output: () => out, stop };
}
