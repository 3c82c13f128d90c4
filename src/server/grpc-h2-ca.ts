// Serves IstioCertificateService's one unary method on node:http2 directly (config
// `grpcServer: node-http2`): the gRPC wire protocol for this method only, length-prefixed
// messages in, one message and a status in trailers out, without grpc-js's per-call machinery,
// which cost ~40 µs of server CPU per call (issue 11). grpc-ca.ts stays the oracle:
// test/server/ca-server.test.ts runs against both, and the same requests get the same statuses.
import * as http2 from "node:http2";
import type { Socket } from "node:net";
import type { TLSSocket } from "node:tls";
import { gunzipSync, inflateSync } from "node:zlib";
import {
  answerCreateCertificate,
  callerCredentials,
  MAX_REQUEST_MESSAGE_BYTES,
  type CaApiServer,
  type CaCallOptions,
} from "./ca-call.js";
import { listenOnEveryAddress } from "../net/listen.js";
import { istioCaServiceDefinition, type WireCertificateRequest } from "./proto.js";
import { CA_TLS_SERVER_OPTIONS, type ReloadableServerCredentials } from "./server-credentials.js";
import { closeWithGrace } from "../timing/grace.js";

/** gRPC status codes this transport sends itself (the policy's are in ca-service.ts). */
const Status = {
  OK: 0,
  DEADLINE_EXCEEDED: 4,
  RESOURCE_EXHAUSTED: 8,
  UNIMPLEMENTED: 12,
  INTERNAL: 13,
} as const;

const CONTENT_TYPE = "application/grpc+proto";
/** Request compression we decode, advertised with error statuses (responses are never compressed). */
const ACCEPT_ENCODING = "identity,deflate,gzip";
const TIMEOUT_UNIT_MS: Record<string, number> = { H: 3_600_000, M: 60_000, S: 1000, m: 1, u: 1e-3, n: 1e-6 };

export interface H2CaOptions extends CaCallOptions {
  credentials: ReloadableServerCredentials;
  address: string;
  /** How long shutdown() lets calls in flight finish before it closes their connections. */
  shutdownGraceMs: number;
  /** The addresses of a listen host name (net/listen.ts); default the system resolver. */
  resolveHost?: (host: string) => Promise<string[]>;
}

/** grpc-message: bytes outside printable ASCII, and '%', percent-encoded (gRPC over HTTP/2 spec). */
export function percentEncodeGrpcMessage(message: string): string {
  if (/^[\x20-\x24\x26-\x7e]*$/.test(message)) return message;
  let out = "";
  for (const b of Buffer.from(message, "utf8"))
    out +=
      b >= 0x20 && b <= 0x7e && b !== 0x25
        ? String.fromCharCode(b)
        : `%${b.toString(16).toUpperCase().padStart(2, "0")}`;
  return out;
}

/** grpc-timeout in milliseconds; undefined when absent, NaN when malformed. */
function timeoutMs(header: string | string[] | undefined): number | undefined {
  if (header === undefined) return undefined;
  const m = /^(\d{1,8})([HMSmun])$/.exec(String(header));
  return m ? Math.floor(Number(m[1]) * TIMEOUT_UNIT_MS[m[2]!]!) : NaN;
}

function first(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v[0] : v;
}

export async function startH2Ca(o: H2CaOptions): Promise<CaApiServer> {
  const method = istioCaServiceDefinition()["CreateCertificate"]!;
  /** One server per address the listen host resolves to (net/listen.ts); they share everything else. */
  const servers: http2.Http2SecureServer[] = [];
  const unwatch = o.credentials.watch((ctx) => {
    try {
      for (const server of servers) server.setSecureContext(ctx);
    } catch (err) {
      o.log.error(
        { err: (err as Error).message },
        "cannot load the CA API's new TLS certificate; keeping the old one",
      );
    }
  });
  // Every TCP connection, from accept on: one still in its TLS handshake holds close() too.
  const sockets = new Set<Socket>();
  const sessions = new Set<http2.ServerHttp2Session>();
  let closing = false;
  const create = (): http2.Http2SecureServer => {
    const server = http2.createSecureServer({
      ...CA_TLS_SERVER_OPTIONS,
      ...o.credentials.secureContextOptions(),
      // As grpc-js: Node's default per-session cap (10 MB) refuses new streams under load.
      maxSessionMemory: Number.MAX_SAFE_INTEGER,
    });
    servers.push(server);
    server.setTimeout(0);
    // Errors of a connection or session end that connection only (a peer that resets, garbage).
    server.on("secureConnection", (socket: TLSSocket) => socket.on("error", () => {}));
    server.on("sessionError", () => {});
    server.on("connection", (socket: Socket) => {
      sockets.add(socket);
      socket.on("close", () => sockets.delete(socket));
    });
    server.on("session", (session) => {
      sessions.add(session);
      session.on("error", () => {});
      session.on("close", () => sessions.delete(session));
      // Accepted before the shutdown, handshaken after it: no new calls on it either.
      if (closing) session.close();
    });
    server.on("stream", (stream, headers) => serveStream(o, method, stream, headers));
    return server;
  };

  let listening: { servers: http2.Http2SecureServer[]; port: number };
  try {
    listening = await listenOnEveryAddress({
      address: o.address,
      what: "the CA gRPC API",
      create,
      log: o.log,
      ...(o.resolveHost ? { resolve: o.resolveHost } : {}),
    });
  } catch (err) {
    unwatch();
    throw err;
  }
  // After the bind, a listener error (e.g. out of file descriptors on accept) is logged, not fatal.
  for (const server of listening.servers)
    server.on("error", (err) => o.log.error({ err: err.message }, "CA gRPC API listener error"));
  let shutdown: Promise<{ forced: boolean }> | undefined;
  return {
    port: listening.port,
    shutdown: () =>
      (shutdown ??= (() => {
        unwatch();
        closing = true;
        return closeWithGrace({
          // close() stops accepting and calls back once every connection is gone; session.close()
          // (GOAWAY) lets the streams in flight finish first.
          graceful: (done) => {
            let open = listening.servers.length;
            for (const server of listening.servers) server.close(() => --open === 0 && done());
            for (const s of sessions) s.close();
          },
          // A peer that never ends its request (or its handshake) would hold the shutdown.
          force: () => {
            for (const s of sessions) s.destroy();
            for (const s of sockets) s.destroy();
          },
          graceMs: o.shutdownGraceMs,
        });
      })()),
  };
}

type Method = ReturnType<typeof istioCaServiceDefinition>[string];

function serveStream(
  o: CaCallOptions,
  method: Method,
  stream: http2.ServerHttp2Stream,
  headers: http2.IncomingHttpHeaders,
): void {
  // A reset by the peer or a torn-down session: the call is over, nothing more is written.
  stream.on("error", () => {});
  let done = false;
  let timer: NodeJS.Timeout | undefined;
  const writable = (): boolean => !stream.destroyed && !stream.closed;
  const end = (): void => {
    done = true;
    clearTimeout(timer);
    // The answer is complete; ask the peer to stop sending the rest of its request (RFC 9113 8.1).
    if (writable() && !stream.readableEnded) stream.close(http2.constants.NGHTTP2_NO_ERROR);
  };
  const httpError = (status: number): void => {
    if (writable()) stream.respond({ ":status": status }, { endStream: true });
    end();
  };
  /** A trailers-only response: the status in the only HEADERS frame. */
  const fail = (code: number, message: string): void => {
    if (done) return;
    if (writable())
      stream.respond(
        {
          ":status": 200,
          "content-type": CONTENT_TYPE,
          "grpc-accept-encoding": ACCEPT_ENCODING,
          "grpc-status": String(code),
          "grpc-message": percentEncodeGrpcMessage(message),
        },
        { endStream: true },
      );
    end();
  };
  stream.on("close", () => {
    done = true;
    clearTimeout(timer);
  });

  if (headers[":method"] !== "POST") return httpError(405);
  const contentType = headers["content-type"];
  if (typeof contentType !== "string" || !contentType.startsWith("application/grpc")) return httpError(415);
  const path = headers[":path"];
  if (path !== method.path)
    return fail(Status.UNIMPLEMENTED, `The server does not implement the method ${path}`);
  const timeout = timeoutMs(headers["grpc-timeout"]);
  if (Number.isNaN(timeout))
    return fail(Status.INTERNAL, `Invalid grpc-timeout value "${String(headers["grpc-timeout"])}"`);
  if (timeout !== undefined)
    timer = setTimeout(() => fail(Status.DEADLINE_EXCEEDED, "Deadline exceeded"), timeout);

  const chunks: Buffer[] = [];
  let received = 0;
  /** The first message's length from its prefix; -1 until 5 bytes are in. */
  let length = -1;
  stream.on("data", (chunk: Buffer) => {
    if (done) return;
    chunks.push(chunk);
    received += chunk.length;
    if (length < 0 && received >= 5) {
      const head = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks);
      length = head.readUInt32BE(1);
      if (length > MAX_REQUEST_MESSAGE_BYTES)
        return fail(
          Status.RESOURCE_EXHAUSTED,
          `Received message larger than max (${length} vs ${MAX_REQUEST_MESSAGE_BYTES})`,
        );
    }
    if (length >= 0 && received > 5 + length)
      fail(Status.UNIMPLEMENTED, `Received a second request message for unary method ${method.path}`);
  });
  stream.on("end", () => {
    if (done) return;
    if (length < 0 || received < 5 + length)
      return fail(
        Status.UNIMPLEMENTED,
        `Received no complete request message for unary method ${method.path}`,
      );
    const frame = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks);
    const message = decodeMessage(frame, first(headers["grpc-encoding"]));
    if ("code" in message) return fail(message.code, message.message);
    let request: WireCertificateRequest;
    try {
      request = method.requestDeserialize(message.bytes) as WireCertificateRequest;
    } catch {
      return fail(Status.INTERNAL, "Error deserializing request");
    }
    // Only a certificate TLS verified against the trust bundle reaches the authenticators.
    const socket = stream.session?.socket as TLSSocket | undefined;
    const peerCert = socket?.authorized === true ? socket.getPeerCertificate().raw : undefined;
    const creds = callerCredentials(
      first(headers["authorization"]),
      first(headers["clusterid"]),
      peerCert ? new Uint8Array(peerCert) : undefined,
    );
    const peer = (): string =>
      socket?.remoteAddress ? `${socket.remoteAddress}:${socket.remotePort}` : "unknown";
    void answerCreateCertificate(o, request, creds, peer).then((r) => {
      if (done) return;
      if (!r.ok) return fail(r.code, r.message);
      done = true;
      clearTimeout(timer);
      if (!writable()) return;
      const body = method.responseSerialize({ certChain: r.certChain });
      const out = Buffer.allocUnsafe(5 + body.length);
      out[0] = 0;
      out.writeUInt32BE(body.length, 1);
      body.copy(out, 5);
      stream.respond({ ":status": 200, "content-type": CONTENT_TYPE }, { waitForTrailers: true });
      stream.once("wantTrailers", () => {
        if (writable()) stream.sendTrailers({ "grpc-status": String(Status.OK) });
      });
      stream.end(out);
    });
  });
}

/** The message bytes of one length-prefixed frame, decompressed; or the status to send. */
function decodeMessage(
  frame: Buffer,
  encoding: string | undefined,
): { bytes: Buffer } | { code: number; message: string } {
  const payload = frame.subarray(5);
  const flag = frame[0];
  if (flag === 0) return { bytes: payload };
  if (flag !== 1)
    return { code: Status.INTERNAL, message: `Received a message with compressed flag ${flag}` };
  if (encoding === undefined || encoding === "identity")
    return {
      code: Status.INTERNAL,
      message: `Received a compressed message with grpc-encoding "${encoding ?? ""}": the flag needs gzip or deflate`,
    };
  if (encoding !== "gzip" && encoding !== "deflate")
    return {
      code: Status.UNIMPLEMENTED,
      message: `Received message compressed with unsupported encoding "${encoding}"`,
    };
  try {
    const opts = { maxOutputLength: MAX_REQUEST_MESSAGE_BYTES };
    return { bytes: encoding === "gzip" ? gunzipSync(payload, opts) : inflateSync(payload, opts) };
  } catch (err) {
    return (err as { code?: string }).code === "ERR_BUFFER_TOO_LARGE"
      ? {
          code: Status.RESOURCE_EXHAUSTED,
          message: `Received message that decompresses to a size larger than ${MAX_REQUEST_MESSAGE_BYTES}`,
        }
      : { code: Status.INTERNAL, message: "Failed to decompress message" };
  }
}
