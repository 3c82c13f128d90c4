// Interop with the REAL peer: Istio's pilot-agent (istio-agent), built from the Go
// module proxy, gets workload certificates from meshvault over Istio's CA API exactly
// as it would from istiod. Observables are the agent's own outputs: its SDS server
// (what Envoy would receive), the files it writes for OUTPUT_CERTS, its log; and our
// server's metrics.
import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createPrivateKey, createPublicKey, X509Certificate } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, existsSync, readdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { loadServerConfig } from "../../src/config/load.js";
import { GRPC_SERVERS } from "../../src/config/schema.js";
import { startCaServer, type CaServerHandle } from "../../src/server/run.js";
import { silentLogger } from "../../src/log/logger.js";
import { mintLocalToken } from "../../src/identity/local-issuer.js";
import { parseCertificate, parseCertificates } from "../../src/pki/certificate.js";
import { AGENT_PATHS, istioAgentBuild, sdsFetch, startIstioAgent } from "../helpers/istio-agent.js";

const TD = "cluster.local";
let dir: string;
let dataDir: string;
let server: CaServerHandle;

// Every case against both gRPC servers of the CA API (config grpcServer).
for (const grpcServer of GRPC_SERVERS)
  describe(`pilot-agent against the CA API over ${grpcServer}`, () => {
    before(async () => {
      // Build (or find) pilot-agent first, so a build failure is reported as such.
      await istioAgentBuild();
      dir = mkdtempSync(join(tmpdir(), "meshvault-istio-"));
      dataDir = join(dir, "data");
      const config = loadServerConfig({
        env: {},
        overrides: {
          dataDir,
          "listen.grpc": "127.0.0.1:0",
          "listen.http": "127.0.0.1:0",
          "log.level": "silent",
          // Callers authenticate with tokens from our local issuer (same dataDir).
          "authentication.jwt": [],
          "authentication.localIssuer": true,
          // What the agent verifies (pilot/pkg/grpc/tls.go): the host of CA_ADDR as the TLS
          // server name, an IP SAN for 127.0.0.1; "localhost" is replaced by
          // istiod.istio-system.svc, a DNS SAN. Both appear in tests below.
          "servingCertificate.dnsNames": ["istiod.istio-system.svc"],
          "servingCertificate.ipAddresses": ["127.0.0.1"],
          grpcServer,
        },
      });
      server = await startCaServer(config, { log: silentLogger(), defaultMetrics: false });
      await server.firstAttempt;
    });

    after(async () => {
      await server?.close();
      if (dir) rmSync(dir, { recursive: true, force: true });
    });

    const token = (namespace: string, serviceAccount: string, audiences?: string[]): Promise<string> =>
      mintLocalToken({ dataDir, trustDomain: TD, namespace, serviceAccount, audiences });

    /** meshvault_csr_requests_total{result,code} from the server's HTTP /metrics (Prometheus text). */
    async function csrCount(code: string): Promise<number> {
      const res = await fetch(`http://127.0.0.1:${server.httpPort}/metrics`);
      assert.equal(res.status, 200);
      const text = await res.text();
      let n = 0;
      for (const line of text.split("\n")) {
        if (!line.startsWith("meshvault_csr_requests_total{")) continue;
        if (line.includes(`code="${code}"`)) n += Number(line.split(" ").at(-1));
      }
      return n;
    }

    const norm = (pem: string): string => pem.replace(/\r/g, "").trim();

    /** The leaf is ours, for the right identity, and the key the agent holds belongs to it. */
    function assertWorkloadCert(chainPem: string, keyPem: string, ns: string, sa: string): void {
      const chain = parseCertificates(chainPem);
      assert.ok(chain.length >= 1, "certificate chain is empty");
      const leaf = parseCertificate(chainPem);
      assert.deepEqual(leaf.sans.uris, [`spiffe://${TD}/ns/${ns}/sa/${sa}`]);
      const leafX509 = new X509Certificate(chainPem);
      assert.equal(leafX509.ca, false);
      // The agent generated the key (RSA-2048 by default) and sent only a CSR.
      const pub = createPublicKey(createPrivateKey(keyPem));
      assert.equal(pub.asymmetricKeyType, "rsa");
      assert.ok(
        leafX509.publicKey
          .export({ type: "spki", format: "der" })
          .equals(pub.export({ type: "spki", format: "der" })),
        "the leaf certifies the agent's private key",
      );
      // The chain the agent serves verifies up to our trust bundle.
      const roots = parseCertificates(server.rootsPem()).map((c) => new X509Certificate(c.pem));
      const pems = chainPem.match(/-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----/g) ?? [];
      const certs = pems.map((p) => new X509Certificate(p));
      for (let i = 0; i + 1 < certs.length; i++)
        assert.ok(certs[i]!.verify(certs[i + 1]!.publicKey), `chain element ${i} is signed by ${i + 1}`);
      const top = certs.at(-1)!;
      assert.ok(
        roots.some((r) => top.verify(r.publicKey)),
        "the last certificate in the chain is signed by a root in our trust bundle",
      );
    }

    test("sidecar mode: pilot-agent's SDS server serves a meshvault SVID and our root", async () => {
      const issuedBefore = await csrCount("OK");
      const agent = await startIstioAgent({
        mode: "sidecar",
        caAddress: `127.0.0.1:${server.grpcPort}`,
        caRootPem: server.rootsPem(),
        token: await token("shop", "cart"),
        namespace: "shop",
        serviceAccount: "cart",
      });
      try {
        await agent.waitForFile(agent.sdsSocketPath);
        // The bootstrap the agent wrote for Envoy points Envoy's SDS cluster at this very socket.
        const bootstrap = await agent.envoyBootstrap();
        assert.ok(bootstrap.includes(`"./${AGENT_PATHS.sdsSocket}"`), "Envoy bootstrap uses the SDS socket");
        const def = await sdsFetch(agent, "default");
        assert.ok(def.certificateChain && def.privateKey, "default has tls_certificate chain and key");
        assertWorkloadCert(def.certificateChain, def.privateKey, "shop", "cart");
        assert.equal(def.trustedCa, undefined);

        const root = await sdsFetch(agent, "ROOTCA");
        assert.ok(root.trustedCa, "ROOTCA has validation_context.trusted_ca");
        assert.equal(norm(root.trustedCa), norm(server.rootsPem()), "ROOTCA is our trust bundle");
        assert.equal(root.certificateChain, undefined);

        // OUTPUT_CERTS mirrors what SDS served.
        const out = (f: string): string => readFileSync(join(agent.outputCertsDir, f), "utf8");
        assert.equal(norm(out("cert-chain.pem")), norm(def.certificateChain));
        assert.equal(norm(out("key.pem")), norm(def.privateKey));
        assert.equal(norm(out("root-cert.pem")), norm(server.rootsPem()));

        // The SDS server warmed the certificate at startup and served it from its cache:
        // exactly one CreateCertificate for both resources and the files.
        assert.equal(
          await csrCount("OK"),
          issuedBefore + 1,
          "our server counted exactly one issued certificate",
        );
        assert.equal(agent.exitCode(), undefined, "pilot-agent is still running");
      } finally {
        await agent.stop();
      }
    });

    test("proxyless mode (DISABLE_ENVOY): pilot-agent fetches eagerly and writes OUTPUT_CERTS; CA_ADDR=localhost", async () => {
      const issuedBefore = await csrCount("OK");
      const agent = await startIstioAgent({
        mode: "proxyless",
        // "localhost" makes the agent verify the name istiod.istio-system.svc (a DNS SAN).
        caAddress: `localhost:${server.grpcPort}`,
        caRootPem: server.rootsPem(),
        token: await token("grpc", "echo"),
        namespace: "grpc",
        serviceAccount: "echo",
      });
      try {
        const files = ["key.pem", "cert-chain.pem", "root-cert.pem"];
        for (const f of files) await agent.waitForFile(join(agent.outputCertsDir, f), 30_000);
        const out = (f: string): string => readFileSync(join(agent.outputCertsDir, f), "utf8");
        assertWorkloadCert(out("cert-chain.pem"), out("key.pem"), "grpc", "echo");
        assert.equal(norm(out("root-cert.pem")), norm(server.rootsPem()));
        // Istio starts no SDS server in this mode (pkg/istio-agent/agent.go, initSdsServer).
        assert.equal(existsSync(agent.sdsSocketPath), false, "no SDS socket without Envoy");
        // The gRPC xDS bootstrap points proxyless clients at the same files.
        await agent.waitForFile(AGENT_PATHS.grpcBootstrap);
        assert.ok(
          readFileSync(join(agent.cwd, AGENT_PATHS.grpcBootstrap), "utf8").includes(agent.outputCertsDir),
        );
        assert.equal(await csrCount("OK"), issuedBefore + 1);
      } finally {
        await agent.stop();
      }
    });

    test("a token for another audience: pilot-agent logs Unauthenticated and serves no certificate", async () => {
      const issuedBefore = await csrCount("OK");
      const refusedBefore = await csrCount("UNAUTHENTICATED");
      const agent = await startIstioAgent({
        mode: "sidecar",
        caAddress: `127.0.0.1:${server.grpcPort}`,
        caRootPem: server.rootsPem(),
        token: await token("shop", "cart", ["not-istio-ca"]),
        namespace: "shop",
        serviceAccount: "cart",
      });
      try {
        await agent.waitForFile(agent.sdsSocketPath);
        // Istio's SDS server ends the stream with the error (sdsservice.generate); Envoy
        // would retry with backoff. No secret may arrive.
        // The agent passes our status and message through to the SDS client.
        await assert.rejects(
          sdsFetch(agent, "default", 10_000),
          /failed to generate secret for default: .*code = Unauthenticated desc = .*audience \["not-istio-ca"\]/,
        );
        const line = await agent.waitForLog(
          /failed to sign CSR: create certificate: rpc error: code = Unauthenticated/,
        );
        assert.match(line, /Unauthenticated/);
        assert.deepEqual(readdirSync(agent.outputCertsDir), [], "nothing written to OUTPUT_CERTS");
        assert.ok((await csrCount("UNAUTHENTICATED")) > refusedBefore, "our server counted UNAUTHENTICATED");
        assert.equal(await csrCount("OK"), issuedBefore, "nothing issued");
      } finally {
        await agent.stop();
      }
    });

    test("PROV_CERT without a token: pilot-agent authenticates with a certificate we issued (client TLS)", async () => {
      // First a certificate the normal way, as Istio's VM onboarding provisions one.
      const first = await startIstioAgent({
        mode: "proxyless",
        caAddress: `127.0.0.1:${server.grpcPort}`,
        caRootPem: server.rootsPem(),
        token: await token("vm", "legacy"),
        namespace: "vm",
        serviceAccount: "legacy",
      });
      let provCert: { keyPem: string; certChainPem: string };
      try {
        for (const f of ["key.pem", "cert-chain.pem"]) await first.waitForFile(join(first.outputCertsDir, f));
        provCert = {
          keyPem: readFileSync(join(first.outputCertsDir, "key.pem"), "utf8"),
          certChainPem: readFileSync(join(first.outputCertsDir, "cert-chain.pem"), "utf8"),
        };
      } finally {
        await first.stop();
      }
      // Control: neither a token nor a certificate is refused, so below it is the certificate.
      const bare = await startIstioAgent({
        mode: "proxyless",
        caAddress: `127.0.0.1:${server.grpcPort}`,
        caRootPem: server.rootsPem(),
        token: undefined,
        namespace: "vm",
        serviceAccount: "legacy",
      });
      try {
        await bare.waitForLog(/failed to sign CSR: create certificate: rpc error: code = Unauthenticated/);
      } finally {
        await bare.stop();
      }
      const issuedBefore = await csrCount("OK");
      // No token file: the agent sends no authorization header, only its client certificate.
      const agent = await startIstioAgent({
        mode: "proxyless",
        caAddress: `127.0.0.1:${server.grpcPort}`,
        caRootPem: server.rootsPem(),
        token: undefined,
        provCert,
        namespace: "vm",
        serviceAccount: "legacy",
      });
      try {
        for (const f of ["key.pem", "cert-chain.pem"]) await agent.waitForFile(join(agent.outputCertsDir, f));
        const out = (f: string): string => readFileSync(join(agent.outputCertsDir, f), "utf8");
        assertWorkloadCert(out("cert-chain.pem"), out("key.pem"), "vm", "legacy");
        assert.notEqual(norm(out("key.pem")), norm(provCert.keyPem), "a new key, a new certificate");
        assert.equal(await csrCount("OK"), issuedBefore + 1);
      } finally {
        await agent.stop();
      }
    });
  });
