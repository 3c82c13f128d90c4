// A real meshvault CA server (local authority, local token issuer) in a temp dir,
// plus token files for workloads, for the agent, tunnel and demo tests.
import { mkdtempSync, rmSync, writeFileSync, mkdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { loadServerConfig } from "../../src/config/load.js";
import type { GRPC_SERVERS } from "../../src/config/schema.js";
import { startCaServer, type CaServerHandle } from "../../src/server/run.js";
import { mintLocalToken } from "../../src/identity/local-issuer.js";
import { silentLogger } from "../../src/log/logger.js";

type GrpcServerName = (typeof GRPC_SERVERS)[number];

export interface CaFixture {
  dir: string;
  dataDir: string;
  server: CaServerHandle;
  address: string;
  rootCertFile: string;
  /** Writes a token for ns/sa to `<dir>/tokens/<ns>-<sa>` and returns the path. */
  token(namespace: string, serviceAccount: string, file?: string): Promise<string>;
  /** Stops the server (keeps the data dir, so `restart()` brings back the same CA). */
  stop(): Promise<void>;
  restart(): Promise<void>;
  dispose(): Promise<void>;
}

export async function startCaFixture(
  opts: {
    grpcPort?: number;
    minTtl?: boolean;
    grpcServer?: GrpcServerName;
    /** How often the server reads its root-rotation state (`rotation.pollInterval`). */
    rotationPoll?: string;
  } = {},
): Promise<CaFixture> {
  const dir = mkdtempSync(join(tmpdir(), "meshvault-agent-test-"));
  const dataDir = join(dir, "data");
  const config = (port: number) =>
    loadServerConfig({
      env: {},
      overrides: {
        dataDir,
        "listen.grpc": `127.0.0.1:${port}`,
        "listen.http": "127.0.0.1:0",
        "log.level": "silent",
        ...(opts.grpcServer ? { grpcServer: opts.grpcServer } : {}),
        ...(opts.rotationPoll ? { "rotation.pollInterval": opts.rotationPoll } : {}),
      },
    });
  let server = await startCaServer(config(opts.grpcPort ?? 0), {
    log: silentLogger(),
    defaultMetrics: false,
  });
  await server.firstAttempt;
  const port = server.grpcPort;
  const f: CaFixture = {
    dir,
    dataDir,
    server,
    address: `localhost:${port}`,
    rootCertFile: server.rootCertFile,
    async token(namespace, serviceAccount, file) {
      const path = file ?? join(dir, "tokens", `${namespace}-${serviceAccount}`);
      mkdirSync(dirname(path), { recursive: true });
      writeFileSync(
        path,
        await mintLocalToken({ dataDir, trustDomain: "cluster.local", namespace, serviceAccount }),
        { mode: 0o600 },
      );
      return path;
    },
    async stop() {
      await f.server.close();
    },
    async restart() {
      server = await startCaServer(config(port), { log: silentLogger(), defaultMetrics: false });
      await server.firstAttempt;
      f.server = server;
    },
    async dispose() {
      await f.server.close().catch(() => {});
      rmSync(dir, { recursive: true, force: true });
    },
  };
  return f;
}
