import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, rmSync, statSync, writeFileSync, mkdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import net from "node:net";
import { spawn } from "node:child_process";
import tls from "node:tls";
import { X509Certificate } from "node:crypto";
import * as grpc from "@grpc/grpc-js";
import { pino } from "pino";
import type { Logger } from "../../src/log/logger.js";
import {
  SECRET_TYPE_URL,
  createMutableSecretSource,
  loadSdsProtos,
  startSdsServer,
  type MutableSecretSource,
  type SdsServer,
  type WorkloadSecrets,
} from "../../src/agent/sds/index.js";
import {
  SdsTestClient,
  makeTestPki,
  secretsByName,
  type TestPki,
  type WireDiscoveryResponse,
} from "../helpers/sds-client.js";

const SPIFFE_ID = "spiffe://cluster.local/ns/default/sa/sleep";
const BOTH = ["default", "ROOTCA"];
const VERSION_RE = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z\/\d+$/;
const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

interface LogLine {
  level: string;
  obj: Record<string, unknown>;
  msg: string;
}
/** A real pino logger at trace level (every call path runs through pino) that keeps its lines. */
function captureLogger(): { logger: Logger; lines: LogLine[] } {
  const lines: LogLine[] = [];
  const logger = pino(
    { level: "trace" },
    {
      write(line: string) {
        const { level, msg, ...obj } = JSON.parse(line) as Record<string, unknown>;
        lines.push({ level: pino.levels.labels[level as number] ?? String(level), obj, msg: String(msg) });
      },
    },
  ).child({ component: "sds" });
  return { logger, lines };
}

interface Fixture {
  pki: TestPki;
  dir: string;
  socketPath: string;
  source: MutableSecretSource;
  server: SdsServer;
  client: SdsTestClient;
  lines: LogLine[];
  issue(): WorkloadSecrets;
  cleanup(): Promise<void>;
}

let sharedPki: TestPki | undefined;
function pki(): TestPki {
  sharedPki ??= makeTestPki();
  return sharedPki;
}
process.on("exit", () => sharedPki?.dispose());

async function setup(opts: { initial?: boolean } = {}): Promise<Fixture> {
  const p = pki();
  const issue = (): WorkloadSecrets => {
    const id = p.issue(SPIFFE_ID);
    return { certChainPem: id.certChainPem, privateKeyPem: id.privateKeyPem, rootsPem: p.rootPem };
  };
  const dir = mkdtempSync(join(tmpdir(), "mv-sds-"));
  const socketPath = join(dir, "uds", "socket");
  const source = createMutableSecretSource(opts.initial === false ? undefined : issue());
  const { logger, lines } = captureLogger();
  const server = await startSdsServer({ socketPath, source, logger });
  const client = new SdsTestClient(server.address);
  return {
    pki: p,
    dir,
    socketPath,
    source,
    server,
    client,
    lines,
    issue,
    async cleanup() {
      client.close();
      await server.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

function assertResponseShape(resp: WireDiscoveryResponse): void {
  assert.equal(resp.typeUrl, SECRET_TYPE_URL);
  assert.match(resp.versionInfo, VERSION_RE);
  assert.match(resp.nonce, UUID_RE);
}

function assertNoKeyInLogs(lines: LogLine[], secrets: WorkloadSecrets[]): void {
  const text = JSON.stringify(lines);
  assert.ok(!text.includes("PRIVATE KEY"), "a private key PEM header appears in the logs");
  for (const s of secrets) {
    const body = s.privateKeyPem.split("\n").filter((l) => l && !l.startsWith("-----"));
    for (const l of body) assert.ok(!text.includes(l), "private key material appears in the logs");
  }
}

test("StreamSecrets serves default (chain + key) and ROOTCA, wire-exact", async (t) => {
  const f = await setup();
  t.after(() => f.cleanup());
  const current = f.source.current();
  assert.ok(current);

  // Socket and directory permissions: the socket hands out private keys.
  assert.equal(statSync(f.socketPath).mode & 0o777, 0o600);
  assert.equal(statSync(join(f.dir, "uds")).mode & 0o777, 0o700);
  assert.ok(statSync(f.socketPath).isSocket());

  const s = f.client.streamSecrets();
  s.send({ node: { id: "sidecar~10.0.0.1~sleep.default~default.svc.cluster.local" }, resourceNames: BOTH });
  const resp = await s.next();
  assertResponseShape(resp);
  const secrets = secretsByName(resp);
  assert.deepEqual([...secrets.keys()].sort(), ["ROOTCA", "default"]);

  const def = secrets.get("default");
  assert.ok(def);
  assert.deepEqual(def.fields, [1, 2], "default sets name (1) and tls_certificate (2) only");
  assert.equal(
    def.certificateChain,
    current.certChainPem,
    "certificate_chain.inline_bytes is the whole chain",
  );
  assert.equal(def.privateKey, current.privateKeyPem);
  assert.equal(def.trustedCa, undefined);
  const chainCerts = def.certificateChain?.match(/-----BEGIN CERTIFICATE-----/g) ?? [];
  assert.equal(chainCerts.length, 2, "leaf + intermediate");

  const root = secrets.get("ROOTCA");
  assert.ok(root);
  assert.deepEqual(root.fields, [1, 4], "ROOTCA sets name (1) and validation_context (4) only");
  assert.equal(root.trustedCa, f.pki.rootPem);

  // Our own proto files decode the same bytes the same way.
  const protos = loadSdsProtos();
  const viaProto = protos.decodeSecret(
    resp.resources.find((r) => decodeName(r.value) === "default")?.value ?? Buffer.alloc(0),
  );
  assert.equal(
    Buffer.from(viaProto.tls_certificate?.certificate_chain?.inline_bytes ?? []).toString(),
    current.certChainPem,
  );

  assertNoKeyInLogs(f.lines, [current]);
  s.cancel();
});

async function leaveStaleSocket(socketPath: string): Promise<void> {
  const child = spawn(
    process.execPath,
    ["-e", `require("net").createServer().listen(${JSON.stringify(socketPath)}, () => console.log("ready"))`],
    {
      stdio: ["ignore", "pipe", "inherit"],
    },
  );
  await new Promise<void>((resolve, reject) => {
    child.stdout.once("data", () => resolve());
    child.once("exit", (code) => reject(new Error(`listener exited early (${code})`)));
  });
  const exited = new Promise((r) => child.once("exit", r));
  child.kill("SIGKILL");
  await exited;
}

function decodeName(value: Buffer): string {
  return loadSdsProtos().decodeSecret(value).name;
}

test("ACK is not answered; a source change is pushed with a new version and nonce", async (t) => {
  const f = await setup();
  t.after(() => f.cleanup());
  const s = f.client.streamSecrets();
  s.send({ node: { id: "n1" }, resourceNames: BOTH });
  const first = await s.next();
  s.ack(first, BOTH);
  await s.expectNone(300);

  const rotated = f.issue();
  f.source.set(rotated);
  const pushed = await s.next();
  assertResponseShape(pushed);
  assert.notEqual(pushed.nonce, first.nonce);
  assert.notEqual(pushed.versionInfo, first.versionInfo);
  const sec = secretsByName(pushed);
  assert.equal(sec.get("default")?.certificateChain, rotated.certChainPem);
  assert.equal(sec.get("ROOTCA")?.trustedCa, rotated.rootsPem);
  s.ack(pushed, BOTH);
  await s.expectNone(200);
  assert.equal(f.server.stats().pushes, 2);
  s.cancel();
});

test("NACK is logged once with its detail and not answered in a loop; the next change is pushed", async (t) => {
  const f = await setup();
  t.after(() => f.cleanup());
  const s = f.client.streamSecrets();
  s.send({ node: { id: "n1" }, resourceNames: ["default"] });
  const first = await s.next();
  s.nack(first, ["default"], "Failed to load certificate chain from <inline>");
  await s.expectNone(500);
  // Envoy repeating the same NACK changes nothing either.
  s.nack(first, ["default"], "Failed to load certificate chain from <inline>");
  await s.expectNone(300);

  const nackLogs = f.lines.filter((l) => l.level === "warn" && l.msg.includes("NACK"));
  assert.equal(nackLogs.length, 1);
  assert.match(JSON.stringify(nackLogs[0]?.obj), /Failed to load certificate chain/);
  assert.equal(f.server.stats().nacks, 1);

  const rotated = f.issue();
  f.source.set(rotated);
  const pushed = await s.next();
  assert.equal(secretsByName(pushed).get("default")?.certificateChain, rotated.certChainPem);
  s.cancel();
});

test("a request with a stale nonce is ignored", async (t) => {
  const f = await setup();
  t.after(() => f.cleanup());
  const s = f.client.streamSecrets();
  s.send({ resourceNames: ["default"] });
  const first = await s.next();
  f.source.set(f.issue());
  const second = await s.next();
  // Envoy's ACK of the first response, arriving after we pushed the second, now adding ROOTCA: stale.
  s.send({ versionInfo: first.versionInfo, responseNonce: first.nonce, resourceNames: BOTH });
  await s.expectNone(300);
  // The same subscription change with the current nonce is answered.
  s.send({ versionInfo: second.versionInfo, responseNonce: second.nonce, resourceNames: BOTH });
  const third = await s.next();
  assert.deepEqual([...secretsByName(third).keys()].sort(), ["ROOTCA", "default"]);
  s.cancel();
});

test("before the first certificate the stream waits, then gets the push", async (t) => {
  const f = await setup({ initial: false });
  t.after(() => f.cleanup());
  const s = f.client.streamSecrets();
  s.send({ resourceNames: BOTH });
  await s.expectNone(300);
  await assert.rejects(
    f.client.fetchSecrets({ resourceNames: BOTH }),
    (err: grpc.ServiceError) => err.code === grpc.status.UNAVAILABLE,
  );
  const issued = f.issue();
  f.source.set(issued);
  const resp = await s.next();
  assert.equal(secretsByName(resp).get("default")?.privateKey, issued.privateKeyPem);
  s.cancel();
});

test("several streams at once: all subscribers of a changed resource get the push, ROOTCA-only is not re-sent for a leaf rotation", async (t) => {
  const f = await setup();
  t.after(() => f.cleanup());
  // Envoy opens one stream per secret; a second Envoy (or reconnect) adds more.
  const a = f.client.streamSecrets();
  const b = f.client.streamSecrets();
  const c = f.client.streamSecrets();
  a.send({ resourceNames: ["default"] });
  b.send({ resourceNames: BOTH });
  c.send({ resourceNames: ["ROOTCA"] });
  const [ra, rb, rc] = await Promise.all([a.next(), b.next(), c.next()]);
  a.ack(ra, ["default"]);
  b.ack(rb, BOTH);
  c.ack(rc, ["ROOTCA"]);
  await new Promise((r) => setTimeout(r, 100));
  assert.equal(f.server.stats().streams, 3);

  const rotated = f.issue(); // same root, new leaf
  f.source.set(rotated);
  const [pa, pb] = await Promise.all([a.next(), b.next()]);
  assert.equal(secretsByName(pa).get("default")?.certificateChain, rotated.certChainPem);
  assert.equal(secretsByName(pb).get("default")?.certificateChain, rotated.certChainPem);
  assert.notEqual(pa.nonce, pb.nonce);
  await c.expectNone(300);

  // A root change reaches the ROOTCA subscriber too.
  const extraRoot = makeTestPki();
  t.after(() => extraRoot.dispose());
  f.source.set({ ...rotated, rootsPem: f.pki.rootPem + extraRoot.rootPem });
  const pc = await c.next();
  assert.equal(secretsByName(pc).get("ROOTCA")?.trustedCa, f.pki.rootPem + extraRoot.rootPem);
  a.cancel();
  b.cancel();
  c.cancel();
});

test("unknown resource names are logged and left out", async (t) => {
  const f = await setup();
  t.after(() => f.cleanup());
  const s = f.client.streamSecrets();
  s.send({ resourceNames: ["default", "file-cert:/etc/certs/cert-chain.pem~/etc/certs/key.pem"] });
  const resp = await s.next();
  assert.deepEqual([...secretsByName(resp).keys()], ["default"]);
  assert.ok(f.lines.some((l) => l.level === "warn" && l.msg.includes("unknown resource")));
  s.cancel();
});

test("a request for another type URL ends the stream with INVALID_ARGUMENT", async (t) => {
  const f = await setup();
  t.after(() => f.cleanup());
  const s = f.client.streamSecrets();
  s.send({ resourceNames: ["x"], typeUrl: "type.googleapis.com/envoy.config.cluster.v3.Cluster" });
  const st = await s.status;
  assert.equal(st.code, grpc.status.INVALID_ARGUMENT);
});

test("a failure while answering, or bytes that are not a DiscoveryRequest, end only that call", async (t) => {
  const p = pki();
  const id = p.issue(SPIFFE_ID);
  const inner = createMutableSecretSource({
    certChainPem: id.certChainPem,
    privateKeyPem: id.privateKeyPem,
    rootsPem: p.rootPem,
  });
  let broken = true;
  const source = {
    current: () => {
      if (broken) throw new Error("source failed (test)");
      return inner.current();
    },
    onChange: inner.onChange,
  };
  const dir = mkdtempSync(join(tmpdir(), "mv-sds-"));
  const { logger, lines } = captureLogger();
  const server = await startSdsServer({ socketPath: join(dir, "socket"), source, logger });
  const client = new SdsTestClient(server.address);
  const raw = new grpc.Client(server.address, grpc.credentials.createInsecure());
  t.after(async () => {
    client.close();
    raw.close();
    await server.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const s = client.streamSecrets();
  s.send({ resourceNames: BOTH });
  assert.equal((await s.status).code, grpc.status.INTERNAL);
  assert.ok(lines.some((l) => l.level === "error" && l.msg.includes("failed to handle request")));
  await assert.rejects(client.fetchSecrets({ resourceNames: BOTH }), { code: grpc.status.INTERNAL });

  const call = raw.makeBidiStreamRequest(
    "/envoy.service.secret.v3.SecretDiscoveryService/StreamSecrets",
    (b: Buffer) => b,
    (b: Buffer) => b,
  );
  call.on("data", () => {});
  call.on("error", () => {});
  const status = new Promise<grpc.StatusObject>((resolve) => call.on("status", resolve));
  call.write(Buffer.from([0x22, 0x80])); // field 4 (type_url) with a truncated length
  assert.equal((await status).code, grpc.status.INTERNAL);

  broken = false;
  const fresh = client.streamSecrets();
  fresh.send({ resourceNames: BOTH });
  assert.deepEqual([...secretsByName(await fresh.next()).keys()].sort(), ["ROOTCA", "default"]);
  fresh.cancel();
});

test("FetchSecrets returns the requested resources", async (t) => {
  const f = await setup();
  t.after(() => f.cleanup());
  const only = await f.client.fetchSecrets({ resourceNames: ["ROOTCA"] });
  assertResponseShape(only);
  assert.deepEqual([...secretsByName(only).keys()], ["ROOTCA"]);
  const all = await f.client.fetchSecrets({ resourceNames: [] });
  assert.deepEqual([...secretsByName(all).keys()].sort(), ["ROOTCA", "default"]);
  assert.equal(secretsByName(all).get("default")?.certificateChain, f.source.current()?.certChainPem);
});

test("DeltaSecrets answers UNIMPLEMENTED", async (t) => {
  const f = await setup();
  t.after(() => f.cleanup());
  const st = await f.client.deltaSecrets();
  assert.equal(st.code, grpc.status.UNIMPLEMENTED);
  assert.match(st.details, /StreamSecrets/);
});

test("close() ends open streams and removes the socket; a stale socket is replaced, a live one or a file is not", async (t) => {
  const f = await setup();
  t.after(() => f.cleanup());
  const s = f.client.streamSecrets();
  s.send({ resourceNames: ["default"] });
  await s.next();

  // A second server on the same live socket is refused.
  await assert.rejects(startSdsServer({ socketPath: f.socketPath, source: f.source }), /already serving/);

  await f.server.close();
  const st = await s.status;
  assert.equal(st.code, grpc.status.OK);
  assert.equal(existsSync(f.socketPath), false);
  await f.server.close(); // idempotent

  // A stale socket left by a crashed process (SIGKILL leaves the file behind) is replaced.
  const stalePath = join(f.dir, "stale", "socket");
  mkdirSync(join(f.dir, "stale"), { mode: 0o700 });
  await leaveStaleSocket(stalePath);
  assert.ok(statSync(stalePath).isSocket());
  const again = await startSdsServer({ socketPath: stalePath, source: f.source });
  const client2 = new SdsTestClient(again.address);
  const r = await client2.fetchSecrets({ resourceNames: ["ROOTCA"] });
  assert.equal(secretsByName(r).get("ROOTCA")?.trustedCa, f.pki.rootPem);
  client2.close();
  await again.close();
  assert.equal(existsSync(stalePath), false);

  // A regular file where the socket should be is never deleted.
  writeFileSync(stalePath, "not a socket");
  await assert.rejects(startSdsServer({ socketPath: stalePath, source: f.source }), /not a socket/);
  assert.ok(existsSync(stalePath));
});

test("the pushed secrets complete a real mutual-TLS handshake", async (t) => {
  const f = await setup();
  t.after(() => f.cleanup());
  const s = f.client.streamSecrets();
  s.send({ resourceNames: BOTH });
  const first = await s.next();
  s.ack(first, BOTH);
  f.source.set(f.issue()); // use the rotated, pushed secrets
  const pushed = secretsByName(await s.next());
  const chain = pushed.get("default")?.certificateChain;
  const key = pushed.get("default")?.privateKey;
  const roots = pushed.get("ROOTCA")?.trustedCa;
  assert.ok(chain && key && roots);

  const server = tls.createServer(
    { cert: chain, key, ca: roots, requestCert: true, rejectUnauthorized: true, minVersion: "TLSv1.3" },
    (sock) => {
      sock.end("hello over mTLS");
    },
  );
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  t.after(() => new Promise<void>((r) => server.close(() => r())));
  const port = (server.address() as net.AddressInfo).port;

  const { peerUri, data } = await new Promise<{ peerUri: string; data: string }>((resolve, reject) => {
    const sock = tls.connect({
      host: "127.0.0.1",
      port,
      cert: chain,
      key,
      ca: roots,
      // SPIFFE identities are URI SANs, not host names.
      checkServerIdentity: (_host, cert) =>
        cert.subjectaltname?.includes(`URI:${SPIFFE_ID}`)
          ? undefined
          : new Error(`unexpected SAN ${cert.subjectaltname}`),
    });
    let data = "";
    sock.on("secureConnect", () => {
      if (!sock.authorized) reject(sock.authorizationError);
    });
    sock.on("data", (d: Buffer) => (data += d.toString()));
    sock.on("end", () => {
      const der = sock.getPeerX509Certificate();
      resolve({ peerUri: der?.subjectAltName ?? "", data });
    });
    sock.on("error", reject);
  });
  assert.equal(data, "hello over mTLS");
  assert.match(peerUri, /URI:spiffe:\/\/cluster\.local\/ns\/default\/sa\/sleep/);
  assert.equal(new X509Certificate(chain).subjectAltName, `URI:${SPIFFE_ID}`);
  s.cancel();
});
