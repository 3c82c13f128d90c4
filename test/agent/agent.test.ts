import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { existsSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { promises as fs } from "node:fs";
import { join } from "node:path";
import tls from "node:tls";
import { connect as netConnect } from "node:net";
import { once } from "node:events";
import { X509Certificate } from "node:crypto";
import {
  createCaClient,
  parseAgentConfig,
  startAgent,
  WorkloadIdentity,
  type AgentConfigInput,
  type CaClient,
} from "../../src/agent/index.js";
import { parseCertificate } from "../../src/pki/certificate.js";
import { SdsTestClient, secretsByName } from "../helpers/sds-client.js";
import { startCaFixture, type CaFixture } from "./ca-fixture.js";
import { busyPort, ipv6Loopback } from "../helpers/ports.js";

const SLEEP = "spiffe://cluster.local/ns/default/sa/sleep";
const HTTPBIN = "spiffe://cluster.local/ns/default/sa/httpbin";
let ca: CaFixture;

before(async () => {
  ca = await startCaFixture();
});
after(async () => {
  await ca.dispose();
});

function config(identities: AgentConfigInput["identities"], extra: Partial<AgentConfigInput> = {}) {
  return parseAgentConfig(
    {
      ca: { address: ca.address, rootCertFile: ca.rootCertFile },
      keyAlgorithm: "ec-p256",
      backoff: { initial: 0.05, max: 0.3 },
      identities,
      ...extra,
    },
    "test",
  );
}

async function waitFor(cond: () => boolean, what: string, ms = 15_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

test("SDS: a grpc-js client gets default + ROOTCA, a pushed update after rotation, and they complete a TLS handshake", async () => {
  const sleepTok = await ca.token("default", "sleep");
  const httpbinTok = await ca.token("default", "httpbin");
  const agent = await startAgent(
    config([
      {
        namespace: "default",
        serviceAccount: "sleep",
        tokenFile: sleepTok,
        sdsSocket: join(ca.dir, "sds", "sleep.sock"),
      },
      {
        namespace: "default",
        serviceAccount: "httpbin",
        tokenFile: httpbinTok,
        sdsSocket: join(ca.dir, "sds", "httpbin.sock"),
      },
    ]),
  );
  const sleepSds = new SdsTestClient(agent.identities.get("default/sleep")!.sds!.address);
  const httpbinSds = new SdsTestClient(agent.identities.get("default/httpbin")!.sds!.address);
  try {
    await agent.ready();
    const stream = sleepSds.streamSecrets();
    stream.send({ node: { id: "sidecar~sleep" }, resourceNames: ["default", "ROOTCA"] });
    const first = await stream.next();
    const s1 = secretsByName(first);
    assert.deepEqual([...s1.keys()].sort(), ["ROOTCA", "default"]);
    const leaf1 = new X509Certificate(s1.get("default")!.certificateChain!);
    assert.equal(leaf1.subjectAltName, `URI:${SLEEP}`);
    assert.equal(s1.get("ROOTCA")!.trustedCa, ca.server.rootsPem());
    stream.ack(first, ["default", "ROOTCA"]);

    // Forced rotation: a new key and certificate are pushed on the open stream.
    await agent.identities.get("default/sleep")!.identity.rotateNow();
    const pushed = await stream.next();
    stream.ack(pushed, ["default", "ROOTCA"]);
    const s2 = secretsByName(pushed).get("default")!;
    const leaf2 = new X509Certificate(s2.certificateChain!);
    assert.notEqual(leaf2.serialNumber, leaf1.serialNumber);
    assert.notEqual(s2.privateKey, s1.get("default")!.privateKey);

    // The pushed secrets work: httpbin serves with its SDS secrets, sleep connects with the pushed ones.
    const hb = await httpbinSds.fetchSecrets({ resourceNames: ["default", "ROOTCA"] });
    const hbs = secretsByName(hb);
    const server = tls.createServer({
      cert: hbs.get("default")!.certificateChain!,
      key: hbs.get("default")!.privateKey!,
      ca: hbs.get("ROOTCA")!.trustedCa!,
      requestCert: true,
      rejectUnauthorized: true,
    });
    const peers: string[] = [];
    server.on("secureConnection", (s) => {
      peers.push(s.getPeerCertificate().subjectaltname ?? "");
      s.end("hello");
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
    const port = (server.address() as { port: number }).port;
    const got = await new Promise<string>((resolve, reject) => {
      const c = tls.connect({
        host: "127.0.0.1",
        port,
        cert: s2.certificateChain!,
        key: s2.privateKey!,
        ca: secretsByName(first).get("ROOTCA")!.trustedCa!,
        checkServerIdentity: (_h, cert) =>
          cert.subjectaltname === `URI:${HTTPBIN}`
            ? undefined
            : new Error(`unexpected ${cert.subjectaltname}`),
      });
      let data = "";
      c.on("data", (b) => (data += b.toString()));
      c.on("end", () => resolve(data));
      c.on("error", reject);
    });
    await new Promise<void>((r) => server.close(() => r()));
    assert.equal(got, "hello");
    assert.deepEqual(peers, [`URI:${SLEEP}`]);
    stream.cancel();
  } finally {
    sleepSds.close();
    httpbinSds.close();
    await agent.close();
  }
});

test("file output: 0600 key, atomic replacement, hook after each rotation, status and metrics", async () => {
  const tok = await ca.token("default", "files");
  const outDir = join(ca.dir, "files-out");
  const marker = join(ca.dir, "hook.log");
  const agent = await startAgent(
    config(
      [
        {
          namespace: "default",
          serviceAccount: "files",
          tokenFile: tok,
          outDir,
          exec: `echo "$MESHVAULT_SPIFFE_ID $MESHVAULT_CERT_DIR" >> ${marker}`,
        },
      ],
      { statusListen: "127.0.0.1:0" },
    ),
  );
  try {
    await agent.ready();
    await waitFor(() => existsSync(marker), "the post-rotation hook");
    assert.equal((statSync(join(outDir, "key.pem")).mode & 0o777).toString(8), "600");
    assert.equal((statSync(join(outDir, "cert-chain.pem")).mode & 0o777).toString(8), "644");
    const leaf = parseCertificate(readFileSync(join(outDir, "cert-chain.pem"), "utf8"));
    assert.deepEqual(leaf.sans.uris, ["spiffe://cluster.local/ns/default/sa/files"]);
    assert.equal(readFileSync(join(outDir, "root-cert.pem"), "utf8"), ca.server.rootsPem());

    // Readers never see a partial file while rotations run.
    let stop = false;
    let reads = 0;
    const reader = (async () => {
      while (!stop) {
        const key = await fs.readFile(join(outDir, "key.pem"), "utf8");
        const chain = await fs.readFile(join(outDir, "cert-chain.pem"), "utf8");
        assert.match(key, /^-----BEGIN PRIVATE KEY-----\n[\s\S]+-----END PRIVATE KEY-----\n$/);
        assert.match(chain, /^-----BEGIN CERTIFICATE-----\n[\s\S]+-----END CERTIFICATE-----\n$/);
        reads++;
      }
    })();
    const identity = agent.identities.get("default/files")!.identity;
    for (let i = 0; i < 10; i++) await identity.rotateNow();
    stop = true;
    await reader;
    assert.ok(reads > 0);
    assert.deepEqual(
      readdirSync(outDir).sort(),
      ["cert-chain.pem", "key.pem", "root-cert.pem"],
      "no temp files left behind",
    );
    await waitFor(() => readFileSync(marker, "utf8").trim().split("\n").length === 11, "11 hook runs");
    assert.equal(
      readFileSync(marker, "utf8").split("\n")[0],
      `spiffe://cluster.local/ns/default/sa/files ${outDir}`,
    );

    const status = (await (await fetch(`http://127.0.0.1:${agent.statusPort}/_status`)).json()) as {
      ready: boolean;
      identities: { state: string; issued: number }[];
    };
    assert.equal(status.ready, true);
    assert.equal(status.identities[0]!.state, "valid");
    assert.equal(status.identities[0]!.issued, 11);
    const metrics = await (await fetch(`http://127.0.0.1:${agent.statusPort}/metrics`)).text();
    assert.match(metrics, /meshvault_agent_certs_issued_total\{identity="default\/files",via="token"\} 11/);
    assert.match(metrics, /meshvault_agent_cert_state\{identity="default\/files",state="valid"\} 1/);
  } finally {
    await agent.close();
  }
});

test("without a token file the agent renews over mTLS with its current certificate", async () => {
  const tok = await ca.token("default", "mtls", join(ca.dir, "tokens", "mtls-renew"));
  const client = await createCaClient({ address: ca.address, rootCertFile: ca.rootCertFile });
  const id = new WorkloadIdentity({ name: "mtls", ca: client, tokenFile: tok, keyAlgorithm: "ec-p256" });
  try {
    id.start();
    await id.ready();
    assert.equal(id.issued()!.via, "token");
    rmSync(tok);
    const renewed = await id.rotateNow();
    assert.equal(renewed.via, "client-cert");
    assert.equal(renewed.spiffeId, "spiffe://cluster.local/ns/default/sa/mtls");
  } finally {
    id.stop();
    client.close();
  }
});

test("errors name the cause: missing token at start, identity the CA will not grant", async () => {
  const client = await createCaClient({ address: ca.address, rootCertFile: ca.rootCertFile });
  const missing = new WorkloadIdentity({
    name: "missing",
    ca: client,
    tokenFile: join(ca.dir, "no-such-token"),
    keyAlgorithm: "ec-p256",
    backoff: { initialMs: 10_000, maxMs: 10_000 },
  });
  const tok = await ca.token("default", "sleep", join(ca.dir, "tokens", "sleep-for-wrong"));
  const wrong = new WorkloadIdentity({
    name: "wrong",
    ca: client,
    tokenFile: tok,
    spiffeId: HTTPBIN,
    keyAlgorithm: "ec-p256",
    backoff: { initialMs: 10_000, maxMs: 10_000 },
  });
  try {
    await assert.rejects(missing.rotateNow(), /token file .*no-such-token is missing/);
    assert.equal(missing.status().state, "pending");
    assert.equal(missing.status().consecutiveFailures, 1);
    await assert.rejects(
      wrong.rotateNow(),
      /INVALID_ARGUMENT.*spiffe:\/\/cluster\.local\/ns\/default\/sa\/httpbin/,
    );
  } finally {
    missing.stop();
    wrong.stop();
    client.close();
  }
  await assert.rejects(
    createCaClient({ address: ca.address, rootCertFile: join(ca.dir, "nope.pem") }),
    /cannot read the CA root certificate .*nope\.pem: no such file or directory \(ENOENT\); pass --ca-root-cert/,
  );
  assert.throws(
    () => parseAgentConfig({ identities: [{ namespace: "x", tokenFile: "t" }] }, "flags"),
    /set both namespace and serviceAccount[\s\S]*set sdsSocket, outDir or both/,
  );
});

test("statusListen on a name for 127.0.0.1 and ::1 serves the status port over both, on one port", async (t) => {
  if (!(await ipv6Loopback())) return t.skip("no IPv6 loopback on this machine (binding ::1 failed)");
  const tok = await ca.token("default", "status");
  const agent = await startAgent(
    config(
      [
        {
          namespace: "default",
          serviceAccount: "status",
          tokenFile: tok,
          outDir: join(ca.dir, "status-out"),
        },
      ],
      { statusListen: "both-loopbacks.test:0" },
    ),
    // The name is resolved by the test: localhost may name 127.0.0.1 only here.
    { resolveHost: async () => ["127.0.0.1", "::1"] },
  );
  try {
    for (const host of ["127.0.0.1", "[::1]"]) {
      const r = await fetch(`http://${host}:${agent.statusPort}/metrics`);
      assert.equal(r.status, 200, `the status port over ${host}`);
    }
  } finally {
    await agent.close();
  }
});

test("a start that fails at the status port stops what it started: the SDS socket is gone and the renewal loop sends nothing more", async () => {
  const blocker = await busyPort();
  const port = blocker.port;
  // A CA that refuses at once, counting each identity's requests by its token.
  const calls = new Map<string, number>();
  const refusing: CaClient = {
    createCertificate: async (call) => {
      calls.set(call.token ?? "", (calls.get(call.token ?? "") ?? 0) + 1);
      throw new Error("the test CA refuses every request");
    },
    close: () => undefined,
  };
  const tokenFile = (name: string): string => {
    const file = join(ca.dir, `${name}-token`);
    writeFileSync(file, `${name}-token\n`);
    return file;
  };
  const socket = join(ca.dir, "failed-start", "sds.sock");
  try {
    await assert.rejects(
      startAgent(
        config(
          [
            {
              namespace: "default",
              serviceAccount: "failed",
              tokenFile: tokenFile("failed"),
              sdsSocket: socket,
            },
          ],
          { statusListen: `127.0.0.1:${port}` },
        ),
        { caClient: refusing },
      ),
      new RegExp(
        `^Error: cannot listen on 127\\.0\\.0\\.1:${port} for the agent status port \\(--status-listen, statusListen\\): .*EADDRINUSE.*: another process \\(or another meshvault\\) holds port ${port} there; stop it or choose another port$`,
      ),
    );
    assert.equal(existsSync(socket), false, "the SDS socket file is removed");
    const probe = netConnect({ path: socket });
    const [err] = (await once(probe, "error")) as [NodeJS.ErrnoException];
    assert.equal(err.code, "ENOENT", "nothing serves the SDS socket path");

    // Anchor: an agent that did start, on the same refusing CA, retries three times; the failed
    // start's identity sends nothing meanwhile.
    const before = calls.get("failed-token") ?? 0;
    const running = await startAgent(
      config([
        {
          namespace: "default",
          serviceAccount: "running",
          tokenFile: tokenFile("running"),
          sdsSocket: join(ca.dir, "failed-start", "running.sock"),
        },
      ]),
      { caClient: refusing },
    );
    try {
      await waitFor(() => (calls.get("running-token") ?? 0) >= 3, "three attempts of the running agent");
    } finally {
      await running.close();
    }
    assert.equal(calls.get("failed-token") ?? 0, before, "the failed start's identity is stopped");
  } finally {
    blocker.close();
  }
});
