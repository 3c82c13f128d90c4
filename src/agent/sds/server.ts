// Envoy Secret Discovery Service (envoy.service.secret.v3) on a Unix domain socket, for one
// identity: the service (service.ts, with one SdsStream per StreamSecrets call, stream.ts) on a
// gRPC server bound by listener.ts. A node agent serving many identities runs one server (one
// socket) per identity. The split follows Istio's sds/server.go + sdsservice.go and SPIRE's
// sdsv3 handler.
import * as grpc from "@grpc/grpc-js";
import { silentLog, type Log } from "../../log/logger.js";
import { listenOnUnixSocket } from "./listener.js";
import { SdsService, type SdsServiceStats } from "./service.js";
import type { SecretSource } from "./source.js";
import { sdsServiceDefinition } from "./wire.js";

export { DEFAULT_RESOURCE, ROOTCA_RESOURCE } from "./resources.js";
export { DEFAULT_SDS_SOCKET } from "../defaults.js";

export interface SdsServerOptions {
  /** Path of the Unix socket Envoy connects to. Its directory is created if missing. */
  socketPath: string;
  source: SecretSource;
  /** The agent passes `log.child({ component: "sds", identity })`. */
  logger?: Log;
  /**
   * Mode of the socket file. Default 0o600: only our UID may connect (sidecar: Envoy runs as the
   * agent's user). Use 0o660 with a shared group when Envoy runs as another user. The socket hands
   * out private keys; never make it world-accessible.
   */
  socketMode?: number;
  /** Mode for the socket's directory when we create it. Default 0o700. Existing directories are left as they are. */
  dirMode?: number;
}

export type SdsServerStats = SdsServiceStats;

export interface SdsServer {
  /** The gRPC target clients use, `unix:///abs/path/socket`. */
  readonly address: string;
  /** Absolute path of the socket file. */
  readonly socketPath: string;
  stats(): SdsServerStats;
  /** Ends every stream, stops the server and removes the socket file. Idempotent. */
  close(): Promise<void>;
}

export async function startSdsServer(options: SdsServerOptions): Promise<SdsServer> {
  const log = options.logger ?? silentLog;
  const socketMode = options.socketMode ?? 0o600;
  const service = new SdsService(options.source, log);
  const server = new grpc.Server();
  server.addService(sdsServiceDefinition, service.handlers);
  let listener;
  try {
    listener = await listenOnUnixSocket(server, {
      socketPath: options.socketPath,
      socketMode,
      dirMode: options.dirMode ?? 0o700,
      log,
    });
  } catch (err) {
    service.close();
    throw err;
  }
  log.info({ socket: listener.socketPath, mode: socketMode.toString(8) }, "SDS: serving");

  let closed: Promise<void> | undefined;
  return {
    address: listener.address,
    socketPath: listener.socketPath,
    stats: () => service.stats(),
    close: () =>
      (closed ??= (async () => {
        service.close();
        await listener.close();
        log.info({ socket: listener.socketPath }, "SDS: stopped");
      })()),
  };
}
