import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import net from "node:net";
import tls from "node:tls";
import { once } from "node:events";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { generateKeyPairFor, privateKeyPem, spkiDer } from "../../src/pki/keys.js";
import { createSigner, issueCa, issueLeaf, parseIssued } from "../../src/pki/issue.js";
import { parseCertificate } from "../../src/pki/certificate.js";
import {
  createMutableSecretSource,
  startSdsServer,
  type WorkloadSecrets,
} from "../../src/agent/sds/index.js";
import { writeCredentialFiles } from "../../src/agent/file-output.js";
import {
  fileCredentialSource,
  sdsCredentialSource,
  staticCredentialSource,
  startTunnelClient,
  startTunnelServer,
  type RunningTunnel,
} from "../../src/tunnel/index.js";
import { makeTestCa, type TestCa } from "../helpers/pki-fixtures.js";
import { recordingLog } from "../helpers/recording-log.js";
import { ipv6Loopback } from "../helpers/ports.js";
import { waitFor, within } from "../helpers/wait.js";
import type { Log } from "../../src/log/logger.js";

const TD = "spiffe://cluster.local";
const SLEEP = `${TD}/ns/default/sa/sleep`;
const HTTPBIN = `${TD}/ns/default/sa/httpbin`;
const OTHER = `${TD}/ns/default/sa/not-sleep`;

let ca: TestCa;
let echo: net.Server;
let echoPort: number;
let dir: string;

function issue(
  spiffeId: string,
  opts: { now?: Date; ttlSeconds?: number; ca?: TestCa } = {},
): WorkloadSecrets {
  const c = opts.ca ?? ca;
  const key = generateKeyPairFor("ec-p256");
  const leaf = issueLeaf(c.signer, {
    spki: spkiDer(key.publicKey),
    spiffeId,
    ttlSeconds: opts.ttlSeconds ?? 3600,
    ...(opts.now ? { now: opts.now } : {}),
  });
  return {
    certChainPem: leaf.pem + c.intermediate.pem,
    privateKeyPem: privateKeyPem(key.privateKey),
    rootsPem: c.root.pem,
  };
}

/** Sends `msg` through a plaintext port and resolves with what came back, or "closed: <reason>". */
function roundTrip(port: number, msg = "ping", host = "127.0.0.1"): Promise<string> {
  return new Promise((resolve) => {
    const s = net.connect(port, host);
    let got = "";
    const timer = setTimeout(() => {
      s.destroy();
      resolve(`closed: timeout (${got})`);
    }, 5000);
    s.on("connect", () => s.write(msg));
    s.on("data", (b) => {
      got += b.toString();
      if (got === msg) {
        clearTimeout(timer);
        s.end();
        resolve(got);
      }
    });
    s.on("error", (e) => {
      clearTimeout(timer);
      resolve(`closed: ${e.message}`);
    });
    s.on("close", () => {
      clearTimeout(timer);
      resolve(got === msg ? got : `closed: ${got || "no data"}`);
    });
  });
}

/** A direct TLS client (no tunnel), to test what the server admits. */
function tlsRoundTrip(port: number, opts: tls.ConnectionOptions): Promise<string> {
  return new Promise((resolve) => {
    const s = tls.connect({ host: "127.0.0.1", port, checkServerIdentity: () => undefined, ...opts });
    let got = "";
    const timer = setTimeout(() => {
      s.destroy();
      resolve("closed: timeout");
    }, 5000);
    s.on("secureConnect", () => s.write("ping"));
    s.on("data", (b) => {
      got += b.toString();
      if (got === "ping") {
        clearTimeout(timer);
        s.end();
        resolve(got);
      }
    });
    s.on("error", (e) => {
      clearTimeout(timer);
      resolve(`closed: ${e.message}`);
    });
    s.on("close", () => {
      clearTimeout(timer);
      resolve(got === "ping" ? got : `closed: ${got || "no data"}`);
    });
  });
}

/** A root + intermediate made a day ago, so leaves can be issued (and expire) in the past. */
function backdatedCa(): TestCa {
  const now = new Date(Date.now() - 86400_000);
  const rootKey = generateKeyPairFor("ec-p256");
  const root = parseIssued(
    issueCa({ subject: { commonName: "old root" }, key: rootKey.privateKey, ttlSeconds: 7 * 86400, now }),
  );
  const rootSigner = createSigner(root, rootKey.privateKey);
  const intKey = generateKeyPairFor("ec-p256");
  const intermediate = parseIssued(
    issueCa(
      {
        subject: { commonName: "old intermediate" },
        key: intKey.publicKey,
        ttlSeconds: 7 * 86400,
        now,
        pathLen: 0,
      },
      rootSigner,
    ),
  );
  return { root, rootSigner, intermediate, signer: createSigner(intermediate, intKey.privateKey) };
}

before(async () => {
  ca = backdatedCa();
  dir = mkdtempSync(join(tmpdir(), "meshvault-tunnel-test-"));
  echo = net.createServer((s) => {
    s.on("error", () => {});
    s.pipe(s);
  });
  await new Promise<void>((r) => echo.listen(0, "127.0.0.1", () => r()));
  echoPort = (echo.address() as net.AddressInfo).port;
});

after(async () => {
  await new Promise<void>((r) => echo.close(() => r()));
  rmSync(dir, { recursive: true, force: true });
});

async function serverFor(allow: string[], creds = issue(HTTPBIN), logger?: Log): Promise<RunningTunnel> {
  return startTunnelServer({
    listen: "127.0.0.1:0",
    target: `127.0.0.1:${echoPort}`,
    allow,
    credentials: staticCredentialSource(createMutableSecretSource(creds)),
    ...(logger ? { logger } : {}),
  });
}

async function clientFor(serverPort: number, spiffeId: string, verify = [HTTPBIN]): Promise<RunningTunnel> {
  return startTunnelClient({
    listen: "127.0.0.1:0",
    connect: `127.0.0.1:${serverPort}`,
    verifySpiffeId: verify,
    credentials: staticCredentialSource(createMutableSecretSource(issue(spiffeId))),
  });
}

test("allowed SPIFFE ID: client tunnel -> server tunnel -> target over TLS 1.3 mTLS", async () => {
  const server = await serverFor([SLEEP]);
  const client = await clientFor(server.port, SLEEP);
  try {
    assert.equal(await roundTrip(client.port), "ping");
    assert.equal(server.stats().accepted, 1);
    assert.equal(client.stats().accepted, 1);
    // The negotiated protocol is TLS 1.3 by default.
    const peek = await new Promise<string | null>((resolve) => {
      const s = tls.connect({
        host: "127.0.0.1",
        port: server.port,
        ...(() => {
          const c = issue(SLEEP);
          return { cert: c.certChainPem, key: c.privateKeyPem, ca: c.rootsPem };
        })(),
        checkServerIdentity: () => undefined,
      });
      s.on("secureConnect", () => {
        resolve(s.getProtocol());
        s.destroy();
      });
      s.on("error", () => resolve(null));
    });
    assert.equal(peek, "TLSv1.3");
  } finally {
    await client.close();
    await server.close();
  }
});

test("pattern allow-list spiffe://td/ns/<ns>/* admits every identity of the namespace", async () => {
  const server = await serverFor([`${TD}/ns/default/*`]);
  const client = await clientFor(server.port, OTHER);
  try {
    assert.equal(await roundTrip(client.port), "ping");
  } finally {
    await client.close();
    await server.close();
  }
});

test("wrong SPIFFE ID is refused after the handshake and counted as denied", async () => {
  const server = await serverFor([SLEEP]);
  const client = await clientFor(server.port, OTHER);
  try {
    assert.match(await roundTrip(client.port), /^closed/);
    assert.equal(server.stats().denied, 1);
    assert.equal(server.stats().accepted, 0);
    const metrics = await server.metrics.registry.metrics();
    assert.match(metrics, /meshvault_tunnel_connections_total\{result="denied"\} 1/);
  } finally {
    await client.close();
    await server.close();
  }
});

test("no client certificate: the handshake fails", async () => {
  const server = await serverFor([SLEEP]);
  try {
    const r = await tlsRoundTrip(server.port, { ca: ca.root.pem });
    assert.match(r, /^closed/);
    // Anchored on the handshake error being counted, then nothing may have been accepted.
    await waitFor("the handshake error counted", async () => server.stats().handshakeErrors >= 1);
    assert.equal(server.stats().accepted, 0);
  } finally {
    await server.close();
  }
});

test("expired client certificate: the handshake fails, and the server says which certificate and why", async () => {
  const log = recordingLog();
  const server = await serverFor([SLEEP], issue(HTTPBIN), log);
  try {
    const expired = issue(SLEEP, { now: new Date(Date.now() - 3 * 3600_000), ttlSeconds: 3600 });
    const leaf = parseCertificate(expired.certChainPem);
    assert.ok(leaf.notAfter < new Date());
    const r = await tlsRoundTrip(server.port, {
      cert: expired.certChainPem,
      key: expired.privateKeyPem,
      ca: ca.root.pem,
    });
    assert.match(r, /^closed/);
    // Anchored on the handshake error being counted, then nothing may have been accepted.
    await waitFor("the handshake error counted", async () => server.stats().handshakeErrors >= 1);
    assert.equal(server.stats().accepted, 0);
    const refused = log.records.find((l) => l.msg === "TLS handshake refused: the client's certificate");
    assert.ok(refused, JSON.stringify(log.records));
    assert.equal(refused.level, "warn");
    assert.equal(refused.obj["reason"], "the client's certificate has expired");
    assert.equal(refused.obj["spiffeId"], `URI:${SLEEP}`);
    assert.equal(String(refused.obj["serial"]).toLowerCase(), leaf.serialHex.toLowerCase());
    assert.equal(new Date(String(refused.obj["notAfter"])).getTime(), leaf.notAfter.getTime());
  } finally {
    await server.close();
  }
});

test("client certificate from another CA: the handshake fails, and the server says so", async () => {
  const log = recordingLog();
  const server = await serverFor([SLEEP], issue(HTTPBIN), log);
  try {
    const foreign = issue(SLEEP, { ca: makeTestCa() });
    const r = await tlsRoundTrip(server.port, {
      cert: foreign.certChainPem,
      key: foreign.privateKeyPem,
      ca: ca.root.pem,
    });
    assert.match(r, /^closed/);
    await waitFor("the handshake error counted", async () => server.stats().handshakeErrors >= 1);
    assert.equal(server.stats().accepted, 0);
    const refused = log.records.find((l) => l.msg === "TLS handshake refused: the client's certificate");
    assert.equal(refused?.obj["reason"], "the client's certificate does not chain to our trust bundle");
  } finally {
    await server.close();
  }
});

test("plaintext to the mTLS port gets no answer from the target", async () => {
  const server = await serverFor([SLEEP]);
  try {
    assert.match(await roundTrip(server.port, "GET / HTTP/1.1\r\n\r\n"), /^closed/);
    assert.equal(server.stats().accepted, 0);
  } finally {
    await server.close();
  }
});

test("client refuses a server whose SPIFFE ID is not --verify-spiffe-id", async () => {
  const server = await serverFor([SLEEP], issue(OTHER));
  const client = await clientFor(server.port, SLEEP, [HTTPBIN]);
  try {
    assert.match(await roundTrip(client.port), /^closed/);
    assert.equal(client.stats().denied, 1);
    assert.equal(server.stats().accepted, 0);
  } finally {
    await client.close();
    await server.close();
  }
});

test("configuration errors name the flag and the fix", async () => {
  const creds = staticCredentialSource(createMutableSecretSource(issue(HTTPBIN)));
  await assert.rejects(
    startTunnelServer({ listen: "127.0.0.1:0", target: "127.0.0.1:1", allow: [], credentials: creds }),
    /--allow/,
  );
  await assert.rejects(
    startTunnelServer({
      listen: "127.0.0.1:0",
      target: "127.0.0.1:1",
      allow: ["http://x"],
      credentials: creds,
    }),
    /--allow "http:\/\/x"/,
  );
  await assert.rejects(
    startTunnelClient({
      listen: "127.0.0.1:0",
      connect: "127.0.0.1:1",
      verifySpiffeId: [],
      credentials: creds,
    }),
    /--verify-spiffe-id/,
  );
});

test("hot reload: new certificates for new connections, open connections keep going", async () => {
  const serverSrc = createMutableSecretSource(issue(HTTPBIN));
  const clientSrc = createMutableSecretSource(issue(SLEEP));
  const server = await startTunnelServer({
    listen: "127.0.0.1:0",
    target: `127.0.0.1:${echoPort}`,
    allow: [SLEEP],
    credentials: staticCredentialSource(serverSrc),
  });
  const client = await startTunnelClient({
    listen: "127.0.0.1:0",
    connect: `127.0.0.1:${server.port}`,
    verifySpiffeId: [HTTPBIN],
    credentials: staticCredentialSource(clientSrc),
  });
  try {
    // A long-lived connection through both tunnels.
    const s = net.connect(client.port, "127.0.0.1");
    const lines: string[] = [];
    s.on("data", (b) => lines.push(b.toString()));
    await new Promise((r) => s.on("connect", r));
    s.write("a");
    await waitFor('"a" echoed', async () => lines.join("") === "a");

    // Rotate both sides, under a new CA root too: connections opened before keep working.
    const newCa = makeTestCa();
    const both = (c: WorkloadSecrets): WorkloadSecrets => ({ ...c, rootsPem: ca.root.pem + newCa.root.pem });
    serverSrc.set(both(issue(HTTPBIN, { ca: newCa })));
    clientSrc.set(both(issue(SLEEP, { ca: newCa })));
    assert.equal(server.stats().reloads, 1);
    assert.equal(client.stats().reloads, 1);

    s.write("b");
    await waitFor(
      '"b" echoed on the connection opened before the rotation',
      async () => lines.join("") === "ab",
    );
    assert.equal(server.stats().open, 1);

    // A new connection uses the new certificates.
    assert.equal(await roundTrip(client.port), "ping");
    const status = server.status() as unknown as { certificate: { serial: string } };
    assert.equal(
      status.certificate.serial,
      parseCertificate(serverSrc.current()!.certChainPem).serialHex,
      "/_status reports the new certificate",
    );
    s.destroy();
  } finally {
    await client.close();
    await server.close();
  }
});

test("credentials from the agent's files and SDS socket; /_status and /_metrics served", async () => {
  const certDir = join(dir, "sleep");
  await writeCredentialFiles(certDir, issue(SLEEP));
  const sdsSource = createMutableSecretSource(issue(HTTPBIN));
  const sds = await startSdsServer({ socketPath: join(dir, "httpbin.sock"), source: sdsSource });
  const serverCreds = sdsCredentialSource(sds.address);
  const clientCreds = fileCredentialSource(certDir, 50);
  const server = await startTunnelServer({
    listen: "127.0.0.1:0",
    target: `127.0.0.1:${echoPort}`,
    allow: [SLEEP],
    credentials: serverCreds,
    status: "127.0.0.1:0",
  });
  const client = await startTunnelClient({
    listen: "127.0.0.1:0",
    connect: `127.0.0.1:${server.port}`,
    verifySpiffeId: [HTTPBIN],
    credentials: clientCreds,
    status: "127.0.0.1:0",
  });
  try {
    assert.equal(await roundTrip(client.port), "ping");

    // Rotation through both channels reaches the tunnels.
    const nextServer = issue(HTTPBIN);
    sdsSource.set(nextServer);
    await writeCredentialFiles(certDir, issue(SLEEP));
    await waitFor(
      "both tunnels reloaded",
      async () => server.stats().reloads >= 1 && client.stats().reloads >= 1,
    );
    assert.equal(server.stats().reloads, 1, "server reloaded from SDS push");
    assert.equal(client.stats().reloads, 1, "client reloaded from files");
    assert.equal(await roundTrip(client.port), "ping");

    const st = (await (await fetch(`http://127.0.0.1:${server.statusPort}/_status`)).json()) as {
      ready: boolean;
      certificate: { spiffeId: string; serial: string };
      connections: { accepted: number };
    };
    assert.equal(st.ready, true);
    assert.equal(st.certificate.spiffeId, HTTPBIN);
    assert.equal(st.certificate.serial, parseCertificate(nextServer.certChainPem).serialHex);
    assert.equal(st.connections.accepted, 2);
    const m = await (await fetch(`http://127.0.0.1:${client.statusPort}/_metrics`)).text();
    assert.match(m, /meshvault_tunnel_connections_total\{result="accepted"\} 2/);
    assert.match(m, /meshvault_tunnel_cert_expiry_seconds \d+/);
  } finally {
    await client.close();
    await server.close();
    await serverCreds.close();
    await clientCreds.close();
    await sds.close();
  }
});

/** The serial of the certificate the tunnel server presents at host:port (hex, upper case). */
async function presentedSerial(host: string, port: number): Promise<string> {
  const c = issue(SLEEP);
  const s = tls.connect({
    host,
    port,
    cert: c.certChainPem,
    key: c.privateKeyPem,
    ca: c.rootsPem,
    checkServerIdentity: () => undefined,
  });
  try {
    await within(`a TLS session with [${host}]:${port}`, once(s, "secureConnect"));
    return s.getPeerCertificate().serialNumber.toUpperCase();
  } finally {
    s.destroy();
  }
}

test("--listen and --status on a name for 127.0.0.1 and ::1: both tunnels answer over each, a reload reaches every listener", async (t) => {
  if (!(await ipv6Loopback())) return t.skip("no IPv6 loopback on this machine (binding ::1 failed)");
  // The name is resolved by the test: localhost may name 127.0.0.1 only here.
  const resolveHost = async (): Promise<string[]> => ["127.0.0.1", "::1"];
  const serverSrc = createMutableSecretSource(issue(HTTPBIN));
  const server = await startTunnelServer({
    listen: "both-loopbacks.test:0",
    target: `127.0.0.1:${echoPort}`,
    allow: [SLEEP],
    credentials: staticCredentialSource(serverSrc),
    status: "both-loopbacks.test:0",
    resolveHost,
  });
  const clients: RunningTunnel[] = [];
  try {
    for (const host of ["127.0.0.1", "[::1]"])
      clients.push(
        await startTunnelClient({
          listen: "both-loopbacks.test:0",
          connect: `${host}:${server.port}`,
          verifySpiffeId: [HTTPBIN],
          credentials: staticCredentialSource(createMutableSecretSource(issue(SLEEP))),
          status: "both-loopbacks.test:0",
          resolveHost,
        }),
      );
    // Each client reaches the server over one of its addresses; each is reached over both of its own.
    for (const client of clients)
      for (const host of ["127.0.0.1", "::1"]) {
        assert.equal(await roundTrip(client.port, "ping", host), "ping", `client on ${host}`);
        const url = host.includes(":") ? `[${host}]` : host;
        assert.equal((await fetch(`http://${url}:${client.statusPort}/healthz`)).status, 200);
        assert.equal((await fetch(`http://${url}:${server.statusPort}/healthz`)).status, 200);
      }
    assert.equal(server.stats().accepted, 4);

    serverSrc.set(issue(HTTPBIN));
    const serial = parseCertificate(serverSrc.current()!.certChainPem).serialHex.toUpperCase();
    for (const host of ["127.0.0.1", "::1"])
      assert.equal(await presentedSerial(host, server.port), serial, `the new certificate on ${host}`);
  } finally {
    for (const c of clients) await c.close();
    await server.close();
  }
});

test("the listening log lines write an IPv6 listener as [host]:port", async (t) => {
  if (!(await ipv6Loopback())) return t.skip("no IPv6 loopback on this machine (binding ::1 failed)");
  const log = recordingLog();
  const server = await startTunnelServer({
    listen: "[::1]:0",
    target: `127.0.0.1:${echoPort}`,
    allow: [SLEEP],
    credentials: staticCredentialSource(createMutableSecretSource(issue(HTTPBIN))),
    logger: log,
  });
  try {
    const client = await startTunnelClient({
      listen: "[::1]:0",
      connect: `[::1]:${server.port}`,
      verifySpiffeId: [HTTPBIN],
      credentials: staticCredentialSource(createMutableSecretSource(issue(SLEEP))),
      logger: log,
    });
    try {
      const listening = log.records.filter((r) => r.msg.endsWith("listening")).map((r) => r.obj["listen"]);
      assert.deepEqual(listening, [`[::1]:${server.port}`, `[::1]:${client.port}`]);
    } finally {
      await client.close();
    }
  } finally {
    await server.close();
  }
});
