// Both gRPC servers of the CA API (config grpcServer: grpc-js, the library and oracle, and
// node-http2, ours) answer the same wire-level requests the same way: a raw node:http2 client
// sends what grpc clients send and what misbehaving peers send (bad paths, bad framing,
// resets, garbage, compression, deadlines), and the server stays up. Real TLS, real sockets.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import * as http2 from "node:http2";
import * as tls from "node:tls";
import { once } from "node:events";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer as createTcpServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { gzipSync, deflateSync } from "node:zlib";
import { loadServerConfig } from "../../src/config/load.js";
import { GRPC_SERVERS } from "../../src/config/schema.js";
import { startCaServer, type CaServerHandle } from "../../src/server/run.js";
import { silentLogger } from "../../src/log/logger.js";
import { mintLocalToken } from "../../src/identity/local-issuer.js";
import { istioCaServiceDefinition, plainToStruct } from "../../src/server/proto.js";
import { percentEncodeGrpcMessage } from "../../src/server/grpc-h2-ca.js";
import { buildCsr } from "../../src/pki/csr.js";
import { generateKeyPairFor, privateKeyPem } from "../../src/pki/keys.js";
import { parseCertificate } from "../../src/pki/certificate.js";
import { opensslSelfSigned } from "../helpers/openssl.js";
import { busyPort, freePort } from "../helpers/ports.js";
import { waitFor, within } from "../helpers/wait.js";

type GrpcServer = (typeof GRPC_SERVERS)[number];
const TD = "cluster.local";
const PATH = "/istio.v1.auth.IstioCertificateService/CreateCertificate";
const method = istioCaServiceDefinition()["CreateCertificate"]!;
let dir: string;
const servers = {} as Record<GrpcServer, CaServerHandle>;
const dataDirs = {} as Record<GrpcServer, string>;

async function startServer(grpcServer: GrpcServer, name: string): Promise<CaServerHandle> {
  const config = loadServerConfig({
    env: {},
    overrides: {
      dataDir: join(dir, name),
      "listen.grpc": "127.0.0.1:0",
      "listen.http": "127.0.0.1:0",
      "log.level": "silent",
      grpcServer,
    },
  });
  const s = await startCaServer(config, { log: silentLogger(), defaultMetrics: false });
  await s.firstAttempt;
  return s;
}

before(async () => {
  dir = mkdtempSync(join(tmpdir(), "meshvault-transports-"));
  for (const t of GRPC_SERVERS) {
    dataDirs[t] = join(dir, t);
    servers[t] = await startServer(t, t);
  }
});

after(async () => {
  for (const t of GRPC_SERVERS) await servers[t]?.close();
  rmSync(dir, { recursive: true, force: true });
});

const token = (t: GrpcServer, sa = "sleep"): Promise<string> =>
  mintLocalToken({ dataDir: dataDirs[t], trustDomain: TD, namespace: "default", serviceAccount: sa });

function csr(sa = "sleep"): { csrPem: string; keyPem: string } {
  const { privateKey } = generateKeyPairFor("ec-p256");
  return {
    csrPem: buildCsr(privateKey, { uris: [`spiffe://${TD}/ns/default/sa/${sa}`] }),
    keyPem: privateKeyPem(privateKey),
  };
}

/** One length-prefixed gRPC message. */
function frame(payload: Buffer, compressed = 0): Buffer {
  const head = Buffer.alloc(5);
  head[0] = compressed;
  head.writeUInt32BE(payload.length, 1);
  return Buffer.concat([head, payload]);
}

const request = (csrPem: string): Buffer =>
  method.requestSerialize({ csr: csrPem, validityDuration: 3600, metadata: plainToStruct({}) });

function connect(t: GrpcServer, tlsOpts: { cert?: string; key?: string } = {}): http2.ClientHttp2Session {
  const session = http2.connect(`https://127.0.0.1:${servers[t].grpcPort}`, {
    ca: servers[t].rootsPem(),
    ...tlsOpts,
  });
  session.on("error", () => {});
  return session;
}

interface Answer {
  httpStatus: number | undefined;
  /** grpc-status and the decoded grpc-message, from the trailers or a trailers-only response. */
  code: number | undefined;
  message: string | undefined;
  body: Buffer;
}

interface CallOptions {
  path?: string;
  method?: string;
  contentType?: string;
  headers?: Record<string, string>;
  /** Written one by one; the request ends after the last unless `end` is false. */
  chunks?: Buffer[];
  end?: boolean;
}

/** Starts a call; `answer` resolves once the server has ended its side of the stream. */
function call(
  session: http2.ClientHttp2Session,
  o: CallOptions = {},
): {
  stream: http2.ClientHttp2Stream;
  answer: Promise<Answer>;
} {
  const stream = session.request({
    ":method": o.method ?? "POST",
    ":path": o.path ?? PATH,
    "content-type": o.contentType ?? "application/grpc",
    te: "trailers",
    ...o.headers,
  });
  stream.on("error", () => {});
  const chunks = o.chunks ?? [];
  chunks.forEach((c, i) => (i === chunks.length - 1 && o.end !== false ? stream.end(c) : stream.write(c)));
  if (chunks.length === 0 && o.end !== false) stream.end();
  const answer = new Promise<Answer>((resolve) => {
    let headers: http2.IncomingHttpHeaders = {};
    let trailers: http2.IncomingHttpHeaders = {};
    const body: Buffer[] = [];
    stream.on("response", (h) => (headers = h));
    stream.on("trailers", (h) => (trailers = h));
    stream.on("data", (d: Buffer) => body.push(d));
    const done = (): void => {
      const status = trailers["grpc-status"] ?? headers["grpc-status"];
      const message = trailers["grpc-message"] ?? headers["grpc-message"];
      resolve({
        httpStatus: headers[":status"] === undefined ? undefined : Number(headers[":status"]),
        code: status === undefined ? undefined : Number(status),
        message: message === undefined ? undefined : decodeURIComponent(String(message)),
        body: Buffer.concat(body),
      });
    };
    stream.once("end", done);
    stream.once("close", done);
  });
  return { stream, answer };
}

/** The same call on both servers, each on a fresh connection. */
async function onBoth(
  o: (t: GrpcServer) => Promise<CallOptions> | CallOptions,
): Promise<Record<GrpcServer, Answer>> {
  const out = {} as Record<GrpcServer, Answer>;
  for (const t of GRPC_SERVERS) {
    const session = connect(t);
    try {
      out[t] = await within(`${t} answers`, call(session, await o(t)).answer);
    } finally {
      session.destroy();
    }
  }
  return out;
}

function assertSame(a: Record<GrpcServer, Answer>, code: number, message: RegExp, sameMessage = true): void {
  for (const t of GRPC_SERVERS) {
    assert.equal(a[t].code, code, `${t}: code ${a[t].code} ${a[t].message}`);
    assert.match(a[t].message ?? "", message, t);
  }
  if (sameMessage) assert.equal(a["node-http2"].message, a["grpc-js"].message);
}

/** The server still issues: a good call on `session` (or a new connection). */
async function assertServes(t: GrpcServer, session?: http2.ClientHttp2Session): Promise<void> {
  const s = session ?? connect(t);
  try {
    const a = await within(
      `${t} issues`,
      call(s, {
        headers: { authorization: `Bearer ${await token(t)}` },
        chunks: [frame(request(csr().csrPem))],
      }).answer,
    );
    assert.equal(a.code, 0, `${t}: ${a.code} ${a.message}`);
    assert.equal(a.httpStatus, 200);
  } finally {
    if (!session) s.destroy();
  }
}

test("a good call: same certificate shape from both; the response is one message, status in trailers", async () => {
  const a = await onBoth(async (t) => ({
    headers: { authorization: `Bearer ${await token(t)}`, "grpc-timeout": "10S" },
    chunks: [frame(request(csr().csrPem))],
  }));
  for (const t of GRPC_SERVERS) {
    assert.equal(a[t].code, 0, `${t}: ${a[t].message}`);
    assert.equal(a[t].body[0], 0, "not compressed");
    assert.equal(a[t].body.readUInt32BE(1), a[t].body.length - 5, "exactly one message");
    const res = method.responseDeserialize(a[t].body.subarray(5)) as { certChain: string[] };
    assert.deepEqual(parseCertificate(res.certChain[0]!).sans.uris, [`spiffe://${TD}/ns/default/sa/sleep`]);
  }
});

test("the request split across many DATA frames (the prefix byte by byte) is reassembled", async () => {
  const a = await onBoth(async (t) => {
    const f = frame(request(csr().csrPem));
    return {
      headers: { authorization: `Bearer ${await token(t)}` },
      chunks: [...[...f.subarray(0, 12)].map((b) => Buffer.from([b])), f.subarray(12, 300), f.subarray(300)],
    };
  });
  for (const t of GRPC_SERVERS) assert.equal(a[t].code, 0, `${t}: ${a[t].message}`);
});

test("policy errors: the same status code and message from both", async () => {
  assertSame(await onBoth(() => ({ chunks: [frame(request(csr().csrPem))] })), 16, /no credentials/);
  assertSame(
    await onBoth(async (t) => ({
      headers: { authorization: `Bearer ${await token(t)}` },
      chunks: [frame(request("not a csr"))],
    })),
    3,
    /not PEM/,
  );
  assertSame(
    await onBoth(async (t) => ({
      headers: { authorization: `Bearer ${await token(t, "other")}` },
      chunks: [frame(request(csr("sleep").csrPem))],
    })),
    3,
    /asks for identity/,
  );
});

test("a self-signed client certificate never authenticates; one our CA issued does", async () => {
  const certFile = join(dir, "self.pem");
  const keyFile = join(dir, "self-key.pem");
  opensslSelfSigned({
    keyArgs: ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
    days: 1,
    subj: "/O=cluster.local",
    cert: certFile,
    key: keyFile,
    extra: ["-addext", `subjectAltName=URI:spiffe://${TD}/ns/default/sa/sleep`],
  });
  const self = { cert: readFileSync(certFile, "utf8"), key: readFileSync(keyFile, "utf8") };
  const refused = {} as Record<GrpcServer, Answer>;
  for (const t of GRPC_SERVERS) {
    // The anchor: a certificate the CA issued authenticates over the same kind of connection.
    const first = csr("renewer");
    const issued = connect(t);
    const chainAnswer = await call(issued, {
      headers: { authorization: `Bearer ${await token(t, "renewer")}` },
      chunks: [frame(request(first.csrPem))],
    }).answer;
    issued.destroy();
    const chain = (method.responseDeserialize(chainAnswer.body.subarray(5)) as { certChain: string[] })
      .certChain;
    const mtls = connect(t, { cert: chain.slice(0, -1).join(""), key: first.keyPem });
    try {
      const ok = await call(mtls, { chunks: [frame(request(csr("renewer").csrPem))] }).answer;
      assert.equal(ok.code, 0, `${t}: the issued client certificate: ${ok.message}`);
    } finally {
      mtls.destroy();
    }
    const bad = connect(t, self);
    try {
      refused[t] = await call(bad, { chunks: [frame(request(csr("sleep").csrPem))] }).answer;
    } finally {
      bad.destroy();
    }
  }
  assertSame(refused, 16, /no credentials/);
});

test("protocol errors: unknown method, wrong content type, no message, two messages, huge prefix, bad bytes", async () => {
  assertSame(
    await onBoth(() => ({
      path: "/istio.v1.auth.IstioCertificateService/Nope",
      chunks: [frame(Buffer.alloc(0))],
    })),
    12,
    /^The server does not implement the method \/istio.v1.auth.IstioCertificateService\/Nope$/,
  );
  const ct = await onBoth(() => ({ contentType: "application/json", chunks: [Buffer.from("{}")] }));
  for (const t of GRPC_SERVERS) assert.equal(ct[t].httpStatus, 415, t);
  // No body at all, and a message cut short: both UNIMPLEMENTED (grpc-js words it for streaming).
  assertSame(await onBoth(() => ({})), 12, /Received no (complete )?request message/, false);
  assertSame(
    await onBoth(() => ({ chunks: [frame(request(csr().csrPem)).subarray(0, 50)] })),
    12,
    /Received no (complete )?request message/,
    false,
  );
  assertSame(
    await onBoth(() => ({ chunks: [frame(request(csr().csrPem)), frame(request(csr().csrPem))] })),
    12,
    /Received a second request message/,
    false,
  );
  // A 4 GiB length prefix and nothing after it, the stream left open: refused at once.
  assertSame(
    await onBoth(() => ({ chunks: [Buffer.from([0, 0xff, 0xff, 0xff, 0xff])], end: false })),
    8,
    /^Received message larger than max \(4294967295 vs 262144\)$/,
  );
  // 300 KiB really sent (a CSR that long).
  assertSame(
    await onBoth(() => ({ chunks: [frame(request("x".repeat(300 * 1024)))] })),
    8,
    /larger than max \(3072\d\d vs 262144\)/,
  );
  // Field 2 (validity) with a varint cut short.
  assertSame(
    await onBoth(() => ({ chunks: [frame(Buffer.from([0x10, 0x80]))] })),
    13,
    /^Error deserializing request$/,
  );
  for (const t of GRPC_SERVERS) await assertServes(t);
});

test("compression: gzip and deflate requests are decoded; an unknown encoding is UNIMPLEMENTED", async () => {
  for (const [encoding, zip] of [
    ["gzip", gzipSync],
    ["deflate", deflateSync],
  ] as const) {
    const a = await onBoth(async (t) => ({
      headers: { authorization: `Bearer ${await token(t)}`, "grpc-encoding": encoding },
      chunks: [frame(zip(request(csr().csrPem)), 1)],
    }));
    for (const t of GRPC_SERVERS) assert.equal(a[t].code, 0, `${t} ${encoding}: ${a[t].message}`);
  }
  assertSame(
    await onBoth(() => ({ headers: { "grpc-encoding": "snappy" }, chunks: [frame(Buffer.from([1]), 1)] })),
    12,
    /^Received message compressed with unsupported encoding "snappy"$/,
  );
  // grpc-js reads a compressed flag with identity as uncompressed; the spec calls it an error.
  const session = connect("node-http2");
  try {
    const a = await call(session, { chunks: [frame(request(csr().csrPem), 1)] }).answer;
    assert.equal(a.code, 13);
    assert.match(a.message ?? "", /compressed message with grpc-encoding ""/);
    const bomb = await call(session, {
      headers: { "grpc-encoding": "gzip" },
      chunks: [frame(gzipSync(Buffer.alloc(1024 * 1024)), 1)],
    }).answer;
    assert.equal(bomb.code, 8);
    assert.match(bomb.message ?? "", /decompresses to a size larger than 262144/);
  } finally {
    session.destroy();
  }
});

test("grpc-timeout: a call whose request never completes gets DEADLINE_EXCEEDED; a bad value is INTERNAL", async () => {
  assertSame(
    await onBoth(() => ({ headers: { "grpc-timeout": "200m" }, chunks: [Buffer.from([0, 0])], end: false })),
    4,
    /^Deadline exceeded$/,
  );
  assertSame(
    await onBoth(() => ({ headers: { "grpc-timeout": "soon" }, chunks: [frame(Buffer.alloc(0))] })),
    13,
    /^Invalid grpc-timeout value "soon"$/,
  );
});

test("misbehaving peers: a reset mid-request, a client gone mid-call, garbage bytes, a GET; pings answered", async () => {
  for (const t of GRPC_SERVERS) {
    const session = connect(t);
    try {
      // Reset after part of the request: the server sees the stream (the ping's answer comes
      // after it), then the reset; the same connection still serves.
      const { stream } = call(session, {
        chunks: [frame(request(csr().csrPem)).subarray(0, 30)],
        end: false,
      });
      await ping(session);
      stream.close(http2.constants.NGHTTP2_CANCEL);
      await once(stream, "close");
      await assertServes(t, session);
    } finally {
      session.destroy();
    }
    // A whole request, then the client disappears before the answer: the server finishes the
    // call (the metric counts it) and writes nothing to the closed stream.
    const before = await issued(t);
    const gone = connect(t);
    call(gone, {
      headers: { authorization: `Bearer ${await token(t)}` },
      chunks: [frame(request(csr().csrPem))],
    });
    await ping(gone);
    gone.destroy();
    await waitFor(`${t} finishes the abandoned call`, async () => (await issued(t)) > before);
    // Not HTTP/2 at all after a TLS handshake that chose h2, then the preface and a nonsense
    // frame: the server says GOAWAY (or hangs up) and keeps serving others.
    for (const garbage of [
      Buffer.from("GET / HTTP/1.1\r\n\r\n" + "\x00\xff".repeat(64)),
      Buffer.concat([Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), Buffer.alloc(64, 0xee)]),
    ]) {
      const sock = tls.connect({
        host: "127.0.0.1",
        port: servers[t].grpcPort,
        ca: servers[t].rootsPem(),
        ALPNProtocols: ["h2"],
      });
      sock.on("error", () => {});
      await once(sock, "secureConnect");
      sock.write(garbage);
      await within(`${t} answers garbage with GOAWAY`, goawayOrClose(sock));
      sock.destroy();
    }
    await assertServes(t);
  }
  const get = connect("node-http2");
  try {
    const a = await call(get, { method: "GET" }).answer;
    assert.equal(a.httpStatus, 405);
  } finally {
    get.destroy();
  }
});

/** Resolves when the server sends an HTTP/2 GOAWAY frame on `sock`, or closes it. */
function goawayOrClose(sock: tls.TLSSocket): Promise<void> {
  return new Promise((resolve) => {
    let buf = Buffer.alloc(0);
    sock.on("close", () => resolve());
    sock.on("data", (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      // Frames: 3-byte length, type (GOAWAY = 7), flags, 4-byte stream id, payload.
      for (let off = 0; off + 9 <= buf.length; off += 9 + buf.readUIntBE(off, 3))
        if (buf[off + 3] === 7) return resolve();
    });
  });
}

/** A PING answered: the server has processed every frame sent before it. */
async function ping(session: http2.ClientHttp2Session): Promise<void> {
  if (session.connecting) await once(session, "connect");
  await new Promise<void>((resolve, reject) => session.ping((err) => (err ? reject(err) : resolve())));
}

/** meshvault_csr_requests_total{result="issued"} of `t`'s server. */
async function issued(t: GrpcServer): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${servers[t].httpPort}/metrics`)).text();
  const m = /meshvault_csr_requests_total\{result="issued",code="OK"\} (\d+)/.exec(text);
  return m ? Number(m[1]) : 0;
}

test("grpc-message is percent-encoded as the gRPC spec says", () => {
  assert.equal(percentEncodeGrpcMessage("plain text: ok"), "plain text: ok");
  assert.equal(percentEncodeGrpcMessage("100%\nnaïve"), "100%25%0Ana%C3%AFve");
});

test("shutdown: no new connections, the call in flight finishes, then the server is gone", async () => {
  for (const t of GRPC_SERVERS) {
    const s = await startServer(t, `${t}-shutdown`);
    const port = s.grpcPort;
    const client = http2.connect(`https://127.0.0.1:${port}`, { ca: s.rootsPem() });
    client.on("error", () => {});
    const f = frame(request(csr().csrPem));
    const jwt = await mintLocalToken({
      dataDir: join(dir, `${t}-shutdown`),
      trustDomain: TD,
      namespace: "default",
      serviceAccount: "sleep",
    });
    const { stream, answer } = call(client, {
      headers: { authorization: `Bearer ${jwt}` },
      chunks: [f.subarray(0, 20)],
      end: false,
    });
    await ping(client);
    const closing = s.close();
    await within(`${t} sends GOAWAY`, once(client, "goaway"));
    stream.end(f.subarray(20));
    const a = await within(`${t} answers the call in flight`, answer);
    assert.equal(a.code, 0, `${t}: ${a.message}`);
    await within(`${t} shuts down`, closing);
    client.destroy();
    const refused = http2.connect(`https://127.0.0.1:${port}`, { ca: s.rootsPem() });
    const [err] = (await once(refused, "error")) as [NodeJS.ErrnoException];
    assert.equal(err.code, "ECONNREFUSED");
  }
});

test("before the authority has issued the server's certificate, every TLS handshake fails", async () => {
  const { freePort } = await import("../helpers/ports.js");
  const closed = await freePort();
  for (const t of GRPC_SERVERS) {
    const config = loadServerConfig({
      env: {},
      overrides: {
        dataDir: join(dir, `${t}-no-cert`),
        "listen.grpc": "127.0.0.1:0",
        "listen.http": "127.0.0.1:0",
        "log.level": "silent",
        grpcServer: t,
        authority: { type: "vault-sign" },
        // Nothing listens there: the authority cannot start, so there is no certificate to serve.
        vault: { address: `http://127.0.0.1:${closed}`, token: "hvs.test-token-not-real" },
      },
    });
    const s = await startCaServer(config, { log: silentLogger(), defaultMetrics: false });
    try {
      await s.firstAttempt;
      assert.equal(s.readiness().ready, false);
      const sock = tls.connect({
        host: "127.0.0.1",
        port: s.grpcPort,
        rejectUnauthorized: false,
        ALPNProtocols: ["h2"],
      });
      const [err] = (await within(`${t} refuses the handshake`, once(sock, "error"))) as [Error];
      assert.ok(err instanceof Error, `${t}: ${String(err)}`);
      assert.equal(sock.authorized, false);
      sock.destroy();
    } finally {
      await s.close();
    }
  }
});

test("an HTTP port in use: the start is refused, the gRPC port it had bound is free again and the data directory unlocked, on both", async () => {
  const blocker = await busyPort();
  const httpPort = blocker.port;
  try {
    for (const t of GRPC_SERVERS) {
      const grpcPort = await freePort();
      const dataDir = join(dir, `${t}-http-busy`);
      const config = loadServerConfig({
        env: {},
        overrides: {
          dataDir,
          "listen.grpc": `127.0.0.1:${grpcPort}`,
          "listen.http": `127.0.0.1:${httpPort}`,
          "log.level": "silent",
          grpcServer: t,
        },
      });
      await assert.rejects(
        startCaServer(config, { log: silentLogger(), defaultMetrics: false }),
        new RegExp(
          `cannot listen on 127.0.0.1:${httpPort} for HTTP: .*EADDRINUSE.*: another process \\(or another meshvault\\) holds port ${httpPort} there`,
        ),
      );
      assert.equal(existsSync(join(dataDir, "server.lock")), false, `${t}: the lock is released`);
      const again = createTcpServer();
      await new Promise<void>((resolve, reject) => {
        again.once("error", reject);
        again.listen(grpcPort, "127.0.0.1", () => resolve());
      });
      await new Promise((r) => again.close(r));
    }
  } finally {
    blocker.close();
  }
});

test("a gRPC port in use is refused with the address and the cause, on both", async () => {
  for (const t of GRPC_SERVERS) {
    const port = servers["grpc-js"].grpcPort;
    const config = loadServerConfig({
      env: {},
      overrides: {
        dataDir: join(dir, `${t}-busy`),
        "listen.grpc": `127.0.0.1:${port}`,
        "listen.http": "127.0.0.1:0",
        "log.level": "silent",
        grpcServer: t,
      },
    });
    await assert.rejects(
      startCaServer(config, { log: silentLogger(), defaultMetrics: false }),
      new RegExp(
        `cannot listen on 127.0.0.1:${port} for the CA gRPC API: .*(EADDRINUSE|address already in use)`,
      ),
    );
  }
});
