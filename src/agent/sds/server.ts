// Envoy Secret Discovery Service (envoy.service.secret.v3) on a Unix domain socket.
//
// One server serves one identity (one SecretSource): resource `default` is the
// workload certificate chain and key, resource `ROOTCA` the trust anchors, as
// istio-agent names them. A node agent serving many identities runs one server
// (one socket) per identity.
//
// State-of-the-world xDS semantics, per stream:
// - a request carrying response_nonce that is not the nonce of our latest
//   response on that stream is stale and ignored;
// - a request (first request, ACK, NACK or a new subscription) is answered
//   only if some subscribed, known resource differs from what this stream was
//   last sent, so an ACK is never answered and a NACK (error_detail set) is
//   logged once and not answered with the same content: the next push happens
//   when the source changes;
// - on a source change every stream whose subscribed resources changed gets a
//   push (a ROOTCA-only stream is not pushed when only the leaf rotated);
// - every response has a fresh version_info (`<RFC3339>/<counter>`, like
//   istio-agent) and a fresh UUID nonce;
// - unknown resource names are logged once per stream and left out of
//   responses (Envoy keeps waiting for them); istio-agent would serve its
//   workload key under any name, which we do not (README, "meshvault agent").
import { createHash, randomUUID } from "node:crypto";
import { promises as fs } from "node:fs";
import net from "node:net";
import path from "node:path";
import * as grpc from "@grpc/grpc-js";
import { silentLogger, type Logger } from "../../log/logger.js";
import {
  SECRET_TYPE_URL,
  type AnyMessage,
  type DiscoveryRequest,
  type DiscoveryResponse,
  type Secret,
} from "./proto.js";
import { encodeSecret, sdsServiceDefinition } from "./wire.js";
import type { SecretSource, WorkloadSecrets } from "./source.js";

/** Resource name of the workload certificate chain + key (istio-agent's `default`). */
export const DEFAULT_RESOURCE = "default";
/** Resource name of the trust anchors (istio-agent's `ROOTCA`). */
export const ROOTCA_RESOURCE = "ROOTCA";
/** istio-agent's default socket, relative to the working directory. */
export const DEFAULT_SDS_SOCKET = "./var/run/secrets/workload-spiffe-uds/socket";

export interface SdsServerOptions {
  /** Path of the Unix socket Envoy connects to. Its directory is created if missing. */
  socketPath: string;
  source: SecretSource;
  /** The project's logger; the agent passes `log.child({ component: "sds", identity })`. */
  logger?: Logger;
  /**
   * Mode of the socket file. Default 0o600: only our UID may connect (sidecar: Envoy runs as the
   * agent's user). Use 0o660 with a shared group when Envoy runs as another user. The socket hands
   * out private keys; never make it world-accessible.
   */
  socketMode?: number;
  /** Mode for the socket's directory when we create it. Default 0o700. Existing directories are left as they are. */
  dirMode?: number;
}

export interface SdsServerStats {
  /** Open StreamSecrets streams. */
  streams: number;
  /** StreamSecrets responses sent since start. */
  pushes: number;
  /** NACKs received since start. */
  nacks: number;
}

export interface SdsServer {
  /** The gRPC target clients use, `unix:///abs/path/socket`. */
  readonly address: string;
  /** Absolute path of the socket file. */
  readonly socketPath: string;
  stats(): SdsServerStats;
  /** Ends every stream, stops the server and removes the socket file. Idempotent. */
  close(): Promise<void>;
}

const KNOWN_RESOURCES = [DEFAULT_RESOURCE, ROOTCA_RESOURCE] as const;
const SHUTDOWN_GRACE_MS = 2000;

interface BuiltResource {
  name: string;
  any: AnyMessage;
  /** sha256 of the encoded Secret: compares content without keeping another copy of it. */
  fingerprint: string;
}

interface StreamState {
  id: number;
  call: grpc.ServerDuplexStream<DiscoveryRequest, DiscoveryResponse>;
  node: string;
  names: string[];
  lastNonce: string | undefined;
  lastNackedNonce: string | undefined;
  /** name -> fingerprint of what this stream was last sent. */
  sent: Map<string, string>;
  warnedUnknown: Set<string>;
  waitingLogged: boolean;
  closed: boolean;
}

export async function startSdsServer(options: SdsServerOptions): Promise<SdsServer> {
  const logger = options.logger ?? silentLogger();
  const socketPath = path.resolve(options.socketPath);
  const socketMode = options.socketMode ?? 0o600;
  if ((socketMode & 0o007) !== 0) {
    throw new Error(
      `SDS socket mode ${socketMode.toString(8)} grants access to other users; it serves private keys`,
    );
  }
  const source = options.source;

  await prepareSocketDir(socketPath, options.dirMode ?? 0o700, logger);

  // Encode resources once per distinct content (compared by value: a source may reuse its object).
  let cacheFor: WorkloadSecrets | undefined;
  let cache = new Map<string, BuiltResource>();
  const resourcesFor = (secrets: WorkloadSecrets): Map<string, BuiltResource> => {
    if (
      cacheFor?.certChainPem !== secrets.certChainPem ||
      cacheFor.privateKeyPem !== secrets.privateKeyPem ||
      cacheFor.rootsPem !== secrets.rootsPem
    ) {
      cache = buildResources(secrets);
      cacheFor = {
        certChainPem: secrets.certChainPem,
        privateKeyPem: secrets.privateKeyPem,
        rootsPem: secrets.rootsPem,
      };
    }
    return cache;
  };

  let versionCounter = 0;
  const nextVersion = (): string => `${rfc3339(new Date())}/${++versionCounter}`;

  const streams = new Set<StreamState>();
  let nextStreamId = 1;
  let pushes = 0;
  let nacks = 0;
  let closing = false;

  const isKnown = (name: string): boolean => (KNOWN_RESOURCES as readonly string[]).includes(name);

  const trySend = (st: StreamState, reason: string): void => {
    if (st.closed || st.names.length === 0) return;
    const secrets = source.current();
    if (!secrets) {
      if (!st.waitingLogged) {
        logger.info(
          { stream: st.id, node: st.node, resources: st.names },
          "SDS: no certificate yet; will push when issued",
        );
        st.waitingLogged = true;
      }
      return;
    }
    const built = resourcesFor(secrets);
    const desired = st.names.flatMap((n) => {
      const r = built.get(n);
      return r ? [r] : [];
    });
    if (desired.length === 0) return;
    if (!desired.some((r) => st.sent.get(r.name) !== r.fingerprint)) return;

    const response: DiscoveryResponse = {
      version_info: nextVersion(),
      resources: desired.map((r) => r.any),
      type_url: SECRET_TYPE_URL,
      nonce: randomUUID(),
    };
    st.lastNonce = response.nonce;
    st.sent = new Map(desired.map((r) => [r.name, r.fingerprint]));
    pushes++;
    st.call.write(response);
    logger.info(
      {
        stream: st.id,
        node: st.node,
        resources: desired.map((r) => r.name),
        version: response.version_info,
        nonce: response.nonce,
        reason,
      },
      "SDS: pushed secrets",
    );
  };

  const handleRequest = (st: StreamState, req: DiscoveryRequest): void => {
    if (st.closed) return;
    if (req.node?.id && st.node === "") st.node = req.node.id;
    if (req.type_url && req.type_url !== SECRET_TYPE_URL) {
      logger.warn(
        { stream: st.id, node: st.node, typeUrl: req.type_url },
        "SDS: request for a non-Secret type; ending stream",
      );
      st.call.emit("error", {
        code: grpc.status.INVALID_ARGUMENT,
        details: `this server serves only ${SECRET_TYPE_URL}, not ${req.type_url}`,
      });
      return;
    }
    const nonce = req.response_nonce ?? "";
    if (nonce !== "" && st.lastNonce !== undefined && nonce !== st.lastNonce) {
      logger.debug(
        { stream: st.id, node: st.node, nonce, latest: st.lastNonce },
        "SDS: stale nonce; request ignored",
      );
      return;
    }

    const names = [...new Set(req.resource_names ?? [])];
    for (const n of names) {
      if (!isKnown(n) && !st.warnedUnknown.has(n)) {
        st.warnedUnknown.add(n);
        logger.warn(
          { stream: st.id, node: st.node, resource: n, known: KNOWN_RESOURCES },
          "SDS: unknown resource requested; not served",
        );
      }
    }
    const subscriptionChanged = names.length !== st.names.length || names.some((n, i) => n !== st.names[i]);
    st.names = names;

    let reason: string;
    if (req.error_detail) {
      if (st.lastNackedNonce !== nonce) {
        st.lastNackedNonce = nonce;
        nacks++;
        logger.warn(
          {
            stream: st.id,
            node: st.node,
            nonce,
            version: req.version_info ?? "",
            code: req.error_detail.code ?? 0,
            detail: req.error_detail.message ?? "",
          },
          "SDS: Envoy rejected secrets (NACK); not resending until they change",
        );
      }
      reason = "nack-with-new-subscription";
    } else if (nonce !== "") {
      logger.debug({ stream: st.id, node: st.node, nonce, version: req.version_info ?? "" }, "SDS: ACK");
      reason = "subscription-changed";
    } else {
      reason = "request";
    }
    // ACKs and NACKs only lead to a response when they changed the subscription to something not yet sent.
    if (nonce === "" || subscriptionChanged) trySend(st, reason);
  };

  const streamSecrets: grpc.handleBidiStreamingCall<DiscoveryRequest, DiscoveryResponse> = (call) => {
    const st: StreamState = {
      id: nextStreamId++,
      call,
      node: "",
      names: [],
      lastNonce: undefined,
      lastNackedNonce: undefined,
      sent: new Map(),
      warnedUnknown: new Set(),
      waitingLogged: false,
      closed: false,
    };
    if (closing) {
      call.emit("error", { code: grpc.status.UNAVAILABLE, details: "SDS server is shutting down" });
      return;
    }
    streams.add(st);
    logger.debug({ stream: st.id }, "SDS: stream opened");
    const finish = (why: string): void => {
      if (st.closed) return;
      st.closed = true;
      streams.delete(st);
      logger.debug({ stream: st.id, node: st.node, why }, "SDS: stream closed");
    };
    call.on("data", (req: DiscoveryRequest) => {
      try {
        handleRequest(st, req);
      } catch (err) {
        // A bug here must cost this stream, never the process (this runs inside grpc-js's
        // message dispatch, where a throw is uncaught).
        try {
          logger.error({ stream: st.id, err: errorMessage(err) }, "SDS: failed to handle request");
          call.emit("error", { code: grpc.status.INTERNAL, details: "SDS server error; reconnect" });
        } catch {
          call.destroy();
        }
      }
    });
    call.on("end", () => {
      finish("client half-closed");
      call.end();
    });
    call.on("cancelled", () => finish("cancelled"));
    call.on("close", () => finish("closed"));
    call.on("error", (err: unknown) => finish(`error: ${errorMessage(err)}`));
  };

  const fetchSecrets: grpc.handleUnaryCall<DiscoveryRequest, DiscoveryResponse> = (call, callback) => {
    const req = call.request;
    if (req.type_url && req.type_url !== SECRET_TYPE_URL) {
      callback({ code: grpc.status.INVALID_ARGUMENT, details: `this server serves only ${SECRET_TYPE_URL}` });
      return;
    }
    const secrets = source.current();
    if (!secrets) {
      callback({ code: grpc.status.UNAVAILABLE, details: "no certificate has been issued yet" });
      return;
    }
    const built = resourcesFor(secrets);
    const requested = req.resource_names?.length ? [...new Set(req.resource_names)] : [...KNOWN_RESOURCES];
    const unknown = requested.filter((n) => !isKnown(n));
    if (unknown.length > 0)
      logger.warn({ node: req.node?.id ?? "", unknown }, "SDS: FetchSecrets for unknown resources");
    const resources = requested.flatMap((n) => {
      const r = built.get(n);
      return r ? [r.any] : [];
    });
    const response: DiscoveryResponse = {
      version_info: nextVersion(),
      resources,
      type_url: SECRET_TYPE_URL,
      nonce: randomUUID(),
    };
    logger.debug({ node: req.node?.id ?? "", resources: requested.filter(isKnown) }, "SDS: FetchSecrets");
    callback(null, response);
  };

  const deltaSecrets: grpc.handleBidiStreamingCall<unknown, unknown> = (call) => {
    call.emit("error", {
      code: grpc.status.UNIMPLEMENTED,
      details:
        "DeltaSecrets (incremental SDS) is not served, as with istio-agent; use StreamSecrets (state-of-the-world SDS)",
    });
  };

  const unsubscribe = source.onChange(() => {
    if (closing) return;
    for (const st of [...streams]) {
      try {
        trySend(st, "source-changed");
      } catch (err) {
        logger.error({ stream: st.id, err: errorMessage(err) }, "SDS: push failed");
      }
    }
  });

  const server = new grpc.Server();
  server.addService(sdsServiceDefinition, {
    StreamSecrets: streamSecrets,
    FetchSecrets: fetchSecrets,
    DeltaSecrets: deltaSecrets,
  });

  // Bind under a temporary name, set the mode, then rename into place: no window in which the
  // socket exists at its well-known path with the umask's permissions.
  const tmpPath = path.join(
    path.dirname(socketPath),
    `.${path.basename(socketPath)}.${process.pid}.${randomUUID().slice(0, 8)}`,
  );
  try {
    await new Promise<void>((resolve, reject) => {
      server.bindAsync(`unix://${tmpPath}`, grpc.ServerCredentials.createInsecure(), (err) =>
        err ? reject(err) : resolve(),
      );
    });
    await fs.chmod(tmpPath, socketMode);
    await fs.rename(tmpPath, socketPath);
  } catch (err) {
    unsubscribe();
    server.forceShutdown();
    await fs.rm(tmpPath, { force: true });
    throw new Error(`SDS: cannot listen on ${socketPath}: ${errorMessage(err)}`, { cause: err });
  }
  const address = `unix://${socketPath}`;
  logger.info({ socket: socketPath, mode: socketMode.toString(8) }, "SDS: serving");

  let closed: Promise<void> | undefined;
  const close = (): Promise<void> => {
    closed ??= (async () => {
      closing = true;
      unsubscribe();
      for (const st of [...streams]) {
        st.closed = true;
        streams.delete(st);
        st.call.end();
      }
      await new Promise<void>((resolve) => {
        const timer = setTimeout(() => {
          server.forceShutdown();
          resolve();
        }, SHUTDOWN_GRACE_MS);
        timer.unref();
        server.tryShutdown(() => {
          clearTimeout(timer);
          resolve();
        });
      });
      await removeIfSocket(socketPath);
      logger.info({ socket: socketPath }, "SDS: stopped");
    })();
    return closed;
  };

  return {
    address,
    socketPath,
    stats: () => ({ streams: streams.size, pushes, nacks }),
    close,
  };
}

function buildResources(secrets: WorkloadSecrets): Map<string, BuiltResource> {
  const secretsByName: Secret[] = [
    {
      name: DEFAULT_RESOURCE,
      tls_certificate: {
        certificate_chain: { inline_bytes: Buffer.from(secrets.certChainPem, "utf8") },
        private_key: { inline_bytes: Buffer.from(secrets.privateKeyPem, "utf8") },
      },
    },
    {
      name: ROOTCA_RESOURCE,
      validation_context: { trusted_ca: { inline_bytes: Buffer.from(secrets.rootsPem, "utf8") } },
    },
  ];
  const out = new Map<string, BuiltResource>();
  for (const secret of secretsByName) {
    const value = encodeSecret(secret);
    out.set(secret.name, {
      name: secret.name,
      any: { type_url: SECRET_TYPE_URL, value },
      fingerprint: createHash("sha256").update(value).digest("hex"),
    });
  }
  return out;
}

/** Go's time.RFC3339 (second precision, `Z`), as in istio-agent's version_info. */
function rfc3339(d: Date): string {
  return d.toISOString().replace(/\.\d{3}Z$/, "Z");
}

async function prepareSocketDir(socketPath: string, dirMode: number, logger: Logger): Promise<void> {
  const dir = path.dirname(socketPath);
  let existed = true;
  try {
    await fs.lstat(dir);
  } catch (err) {
    if (!isErrno(err, "ENOENT")) throw err;
    existed = false;
  }
  if (!existed) {
    await fs.mkdir(dir, { recursive: true, mode: dirMode });
    await fs.chmod(dir, dirMode); // mkdir's mode is filtered by the umask
  }
  const st = await fs.stat(dir);
  if (!st.isDirectory()) throw new Error(`SDS: ${dir} is not a directory`);
  if ((st.mode & 0o002) !== 0 && (st.mode & 0o1000) === 0) {
    logger.warn({ dir, mode: (st.mode & 0o7777).toString(8) }, "SDS: socket directory is world-writable");
  }

  let existing;
  try {
    existing = await fs.lstat(socketPath);
  } catch (err) {
    if (isErrno(err, "ENOENT")) return;
    throw err;
  }
  if (!existing.isSocket())
    throw new Error(`SDS: refusing to replace ${socketPath}: it exists and is not a socket`);
  if (await isListening(socketPath))
    throw new Error(`SDS: another process is already serving on ${socketPath}`);
  await fs.unlink(socketPath);
  logger.info({ socket: socketPath }, "SDS: removed stale socket");
}

function isListening(socketPath: string): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = net.connect({ path: socketPath });
    const done = (v: boolean): void => {
      sock.destroy();
      resolve(v);
    };
    sock.setTimeout(1000, () => done(false));
    sock.once("connect", () => done(true));
    sock.once("error", () => done(false));
  });
}

async function removeIfSocket(p: string): Promise<void> {
  try {
    if ((await fs.lstat(p)).isSocket()) await fs.unlink(p);
  } catch (err) {
    if (!isErrno(err, "ENOENT")) throw err;
  }
}

function isErrno(err: unknown, code: string): boolean {
  return typeof err === "object" && err !== null && (err as { code?: unknown }).code === code;
}

function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
