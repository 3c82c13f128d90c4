// A peer that never finishes its request cannot hold the CA server's shutdown: on both gRPC
// transports, a CreateCertificate stream that sends a valid request prefix and never ends it
// (plus a TCP connection that never starts TLS, and an HTTP request whose headers never end)
// gets the grace period, then its connection is closed, close() resolves and the closers after
// the listeners run (the data directory lock, the last one, is released). Real TLS, real sockets.
import { test } from "node:test";
import assert from "node:assert/strict";
import * as http2 from "node:http2";
import { connect as tcpConnect, type Socket } from "node:net";
import { once } from "node:events";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pino } from "pino";
import { loadServerConfig } from "../../src/config/load.js";
import { GRPC_SERVERS } from "../../src/config/schema.js";
import { startCaServer } from "../../src/server/run.js";
import { lockDir } from "../../src/fs/dir-lock.js";
import { istioCaServiceDefinition, plainToStruct } from "../../src/server/proto.js";
import { buildCsr } from "../../src/pki/csr.js";
import { generateKeyPairFor } from "../../src/pki/keys.js";
import { within } from "../helpers/wait.js";

const PATH = "/istio.v1.auth.IstioCertificateService/CreateCertificate";

/** A real pino logger that keeps its messages. */
function captureLogger(): { logger: pino.Logger; messages: string[] } {
  const messages: string[] = [];
  const logger = pino(
    { level: "info" },
    { write: (line: string) => void messages.push(String((JSON.parse(line) as { msg: unknown }).msg)) },
  );
  return { logger, messages };
}

/** The first 20 bytes of a length-prefixed CreateCertificate request: a valid start, never finished. */
function requestPrefix(): Buffer {
  const { privateKey } = generateKeyPairFor("ec-p256");
  const csr = buildCsr(privateKey, { uris: ["spiffe://cluster.local/ns/default/sa/sleep"] });
  const body = istioCaServiceDefinition()["CreateCertificate"]!.requestSerialize({
    csr,
    validityDuration: 3600,
    metadata: plainToStruct({}),
  });
  const head = Buffer.alloc(5);
  head.writeUInt32BE(body.length, 1);
  return Buffer.concat([head, body]).subarray(0, 20);
}

for (const grpcServer of GRPC_SERVERS) {
  test(`${grpcServer}: a stream that never ends is closed after the shutdown grace and the closers after it run`, async () => {
    const dir = mkdtempSync(join(tmpdir(), "meshvault-grace-"));
    const dataDir = join(dir, "data");
    const { logger, messages } = captureLogger();
    const sockets: Socket[] = [];
    let client: http2.ClientHttp2Session | undefined;
    try {
      const config = loadServerConfig({
        env: {},
        overrides: { dataDir, "listen.grpc": "127.0.0.1:0", "listen.http": "127.0.0.1:0", grpcServer },
      });
      const server = await startCaServer(config, {
        log: logger,
        defaultMetrics: false,
        shutdownGraceMs: 300,
      });
      await server.started;

      client = http2.connect(`https://127.0.0.1:${server.grpcPort}`, { ca: server.rootsPem() });
      client.on("error", () => {});
      const stream = client.request({
        ":method": "POST",
        ":path": PATH,
        "content-type": "application/grpc",
        te: "trailers",
      });
      stream.on("error", () => {});
      stream.resume();
      // Not once(): the stream's error (the server's reset or GOAWAY) must not reject it.
      const streamClosed = new Promise((resolve) => stream.on("close", resolve));
      stream.write(requestPrefix());
      // The server has read the HEADERS and DATA frames once it answers a PING sent after them.
      if (client.connecting) await once(client, "connect");
      await new Promise<void>((resolve, reject) => client!.ping((err) => (err ? reject(err) : resolve())));
      // A TCP connection that never starts its TLS handshake, and an HTTP request whose headers never end.
      for (const port of [server.grpcPort, server.httpPort]) {
        const s = tcpConnect(port, "127.0.0.1");
        s.on("error", () => {});
        sockets.push(s);
        await once(s, "connect");
      }
      sockets[1]!.write("GET /readyz HTTP/1.1\r\nHost: x\r\n");

      await within(`${grpcServer}: close() with a hung stream open`, server.close(), 30_000);
      await within(`${grpcServer}: the hung stream to be closed`, streamClosed);
      assert.ok(
        messages.some((m) => /the CA gRPC API still had requests open after the shutdown grace/.test(m)),
        `${grpcServer}: the forced close is logged; log: ${messages.join(" | ")}`,
      );
      assert.ok(messages.includes("meshvault CA server stopped"));
      // The data directory's lock, released by the last closer, is free again.
      lockDir(dataDir, "server.lock", "the test")();
    } finally {
      client?.destroy();
      for (const s of sockets) s.destroy();
      rmSync(dir, { recursive: true, force: true });
    }
  });
}
