import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync, statSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as tls from "node:tls";
import { generateKeyPair, exportJWK, SignJWT, type CryptoKey } from "jose";
import * as grpc from "@grpc/grpc-js";
import { loadServerConfig } from "../../src/config/load.js";
import { GRPC_SERVERS, type ServerConfig } from "../../src/config/schema.js";
import { startCaServer, type CaServerHandle } from "../../src/server/run.js";
import { silentLogger } from "../../src/log/logger.js";
import { parseCertificate, parseCertificates } from "../../src/pki/certificate.js";
import { mintLocalToken } from "../../src/identity/local-issuer.js";
import { caClient, rejects, type CaClient } from "../helpers/ca-client.js";
import { opensslCsr, opensslVerify } from "../helpers/openssl.js";

const TD = "cluster.local";
const ISSUER = "https://kubernetes.default.svc.cluster.local";
let dir: string;
let server: CaServerHandle;
let client: CaClient;
let serverConfig: ServerConfig;
let rsaKey: CryptoKey;
let ecKey: CryptoKey;
let strangerKey: CryptoKey;

async function token(
  claims: {
    ns?: string;
    sa?: string;
    aud?: string | string[];
    iss?: string;
    exp?: number;
    key?: CryptoKey;
    alg?: string;
  } = {},
): Promise<string> {
  const alg = claims.alg ?? "RS256";
  const key = claims.key ?? (alg === "ES256" ? ecKey : rsaKey);
  return new SignJWT({
    "kubernetes.io": { namespace: claims.ns ?? "default", serviceaccount: { name: claims.sa ?? "sleep" } },
  })
    .setProtectedHeader({ alg, kid: alg === "ES256" ? "ec" : "rsa" })
    .setIssuer(claims.iss ?? ISSUER)
    .setSubject(`system:serviceaccount:${claims.ns ?? "default"}:${claims.sa ?? "sleep"}`)
    .setAudience(claims.aud ?? "istio-ca")
    .setIssuedAt()
    .setExpirationTime(claims.exp ?? Math.floor(Date.now() / 1000) + 600)
    .sign(key);
}

const rsaCsr = () => opensslCsr(["-newkey", "rsa:2048"], "/O=");
const ecCsr = () => opensslCsr(["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"], "/O=");

// The same behaviour from both gRPC servers (config grpcServer): grpc-js is the oracle.
for (const grpcServer of GRPC_SERVERS)
  describe(`the CA API over ${grpcServer}`, () => {
    before(async () => {
      dir = mkdtempSync(join(tmpdir(), "meshvault-server-"));
      ({ privateKey: rsaKey } = await generateKeyPair("RS256", { extractable: true }));
      const rsaPub = (await generateKeyPair("RS256")).publicKey; // decoy key, also in the JWKS
      ({ privateKey: ecKey } = await generateKeyPair("ES256", { extractable: true }));
      ({ privateKey: strangerKey } = await generateKeyPair("RS256"));
      const { createPublicKey } = await import("node:crypto");
      const jwk = (k: CryptoKey) =>
        exportJWK(createPublicKey(k as unknown as import("node:crypto").KeyObject));
      const keys = [
        { ...(await jwk(rsaKey)), kid: "rsa", alg: "RS256" },
        { ...(await exportJWK(rsaPub)), kid: "decoy", alg: "RS256" },
        { ...(await jwk(ecKey)), kid: "ec", alg: "ES256" },
      ];
      writeFileSync(join(dir, "jwks.json"), JSON.stringify({ keys }));
      const config = loadServerConfig({
        env: {},
        overrides: {
          dataDir: join(dir, "data"),
          "listen.grpc": "127.0.0.1:0",
          "listen.http": "127.0.0.1:0",
          "authentication.jwt": [{ issuer: ISSUER, jwksFile: join(dir, "jwks.json") }],
          "authentication.trustedNodeAccounts": ["istio-system/ztunnel"],
          grpcServer,
        },
      });
      server = await startCaServer(config, { log: silentLogger(), defaultMetrics: false });
      await server.firstAttempt;
      client = caClient(`127.0.0.1:${server.grpcPort}`, server.rootsPem());
      serverConfig = config;
    });

    after(async () => {
      client?.close();
      await server?.close();
      rmSync(dir, { recursive: true, force: true });
    });

    function assertChainShape(chain: string[], id: string): void {
      assert.ok(chain.length >= 3, `chain has ${chain.length} elements`);
      for (const el of chain.slice(0, -1))
        assert.equal(parseCertificates(el).length, 1, "one certificate per element");
      assert.equal(chain.at(-1), server.rootsPem(), "last element is the root bundle");
      assert.deepEqual(parseCertificate(chain[0]!).sans.uris, [id]);
    }

    test("RSA-2048 and ECDSA CSRs get SVIDs that openssl verifies as client and server", async () => {
      for (const [make, alg] of [
        [rsaCsr, "RS256"],
        [ecCsr, "ES256"],
      ] as const) {
        const { csrPem } = make();
        const chain = await client.create(csrPem, { token: await token({ alg }) });
        assertChainShape(chain, `spiffe://${TD}/ns/default/sa/sleep`);
        for (const purpose of ["sslclient", "sslserver"]) {
          const [ok, out] = opensslVerify(chain.at(-1)!, chain.slice(1, -1).join(""), chain[0]!, purpose);
          assert.ok(ok, `${alg} ${purpose}: ${out}`);
        }
      }
    });

    test("two issued certificates complete a real mutual-TLS handshake", async () => {
      const a = rsaCsr();
      const b = ecCsr();
      const chainA = await client.create(a.csrPem, { token: await token({ sa: "httpbin" }) });
      const chainB = await client.create(b.csrPem, { token: await token({ sa: "sleep", alg: "ES256" }) });
      const ca = chainA.at(-1)!;
      const srv = tls.createServer(
        {
          key: a.keyPem,
          cert: chainA.slice(0, -1).join(""),
          ca,
          requestCert: true,
          rejectUnauthorized: true,
        },
        (s) => {
          s.end(`hello ${(s.getPeerCertificate() as tls.PeerCertificate).subjectaltname}`);
        },
      );
      await new Promise<void>((r) => srv.listen(0, "127.0.0.1", r));
      const port = (srv.address() as { port: number }).port;
      const reply = await new Promise<string>((resolve, reject) => {
        const sock = tls.connect({
          host: "127.0.0.1",
          port,
          key: b.keyPem,
          cert: chainB.slice(0, -1).join(""),
          ca,
          checkServerIdentity: (_h, cert) =>
            cert.subjectaltname === `URI:spiffe://${TD}/ns/default/sa/httpbin`
              ? undefined
              : new Error("wrong server id"),
        });
        let data = "";
        sock.on("data", (d) => (data += d));
        sock.on("end", () => resolve(data));
        sock.on("error", reject);
      });
      srv.close();
      assert.equal(reply, `hello URI:spiffe://${TD}/ns/default/sa/sleep`);
    });

    test("a workload renews with its current certificate as client certificate (no token)", async () => {
      const first = ecCsr();
      const chain = await client.create(first.csrPem, { token: await token({ sa: "renewer" }) });
      const mtls = caClient(`127.0.0.1:${server.grpcPort}`, server.rootsPem(), {
        certChainPem: chain.slice(0, -1).join(""),
        keyPem: first.keyPem,
      });
      try {
        const renewed = await mtls.create(ecCsr().csrPem);
        assert.deepEqual(parseCertificate(renewed[0]!).sans.uris, [`spiffe://${TD}/ns/default/sa/renewer`]);
      } finally {
        mtls.close();
      }
    });

    test("locally minted tokens work (no Kubernetes)", async () => {
      const jwt = await mintLocalToken({
        dataDir: join(dir, "data"),
        trustDomain: TD,
        namespace: "shop",
        serviceAccount: "cart",
      });
      const chain = await client.create(ecCsr().csrPem, { token: jwt });
      assert.deepEqual(parseCertificate(chain[0]!).sans.uris, [`spiffe://${TD}/ns/shop/sa/cart`]);
    });

    test("spoofing: a CSR asking for another SPIFFE ID is refused", async () => {
      const { csrPem } = opensslCsr(["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"], "/O=", [
        "-addext",
        "subjectAltName=URI:spiffe://cluster.local/ns/istio-system/sa/istiod",
      ]);
      await rejects(
        client.create(csrPem, { token: await token() }),
        grpc.status.INVALID_ARGUMENT,
        /asks for identity spiffe:\/\/cluster.local\/ns\/istio-system\/sa\/istiod but the caller authenticated as spiffe:\/\/cluster.local\/ns\/default\/sa\/sleep/,
      );
    });

    test("spoofing: DNS SANs and CA:true are refused", async () => {
      const dns = opensslCsr(["-newkey", "rsa:2048"], "/O=", ["-addext", "subjectAltName=DNS:evil.example"]);
      await rejects(
        client.create(dns.csrPem, { token: await token() }),
        grpc.status.INVALID_ARGUMENT,
        /DNS:evil.example/,
      );
      const ca = opensslCsr(["-newkey", "rsa:2048"], "/O=", ["-addext", "basicConstraints=critical,CA:TRUE"]);
      await rejects(
        client.create(ca.csrPem, { token: await token() }),
        grpc.status.INVALID_ARGUMENT,
        /CA:true/,
      );
    });

    test("tokens: missing, expired, wrong audience, wrong issuer, alg none, unknown key are UNAUTHENTICATED", async () => {
      const csr = ecCsr().csrPem;
      await rejects(client.create(csr), grpc.status.UNAUTHENTICATED, /no credentials|Bearer/);
      const expired = await token({ exp: Math.floor(Date.now() / 1000) - 3600 });
      await rejects(client.create(csr, { token: expired }), grpc.status.UNAUTHENTICATED, /expired/);
      await rejects(
        client.create(csr, { token: await token({ aud: "vault" }) }),
        grpc.status.UNAUTHENTICATED,
        /audience/,
      );
      await rejects(
        client.create(csr, { token: await token({ iss: "https://other.example" }) }),
        grpc.status.UNAUTHENTICATED,
        /issuer/,
      );
      const b64 = (o: object) => Buffer.from(JSON.stringify(o)).toString("base64url");
      const none = `${b64({ alg: "none", typ: "JWT" })}.${b64({ iss: ISSUER, aud: "istio-ca", sub: "system:serviceaccount:default:sleep", exp: Math.floor(Date.now() / 1000) + 600 })}.`;
      await rejects(client.create(csr, { token: none }), grpc.status.UNAUTHENTICATED, /none/);
      await rejects(
        client.create(csr, { token: await token({ key: strangerKey }) }),
        grpc.status.UNAUTHENTICATED,
        /signature|key/i,
      );
      for (const t of [expired, none]) {
        await assert.rejects(
          client.create(csr, { token: t }),
          (e: grpc.ServiceError) => !e.details.includes(t.split(".")[1]!),
        );
      }
    });

    test("token for another trust domain is refused", async () => {
      const otherTd = await new SignJWT({ sub: "spiffe://other.domain/ns/default/sa/sleep" })
        .setProtectedHeader({ alg: "RS256", kid: "rsa" })
        .setIssuer(ISSUER)
        .setAudience("istio-ca")
        .setExpirationTime(Math.floor(Date.now() / 1000) + 600)
        .sign(rsaKey);
      await rejects(
        client.create(ecCsr().csrPem, { token: otherTd }),
        grpc.status.UNAUTHENTICATED,
        /other\.domain/,
      );
    });

    test("validity: default 24h, maximum 90 days enforced with the limit in the message", async () => {
      const t = await token();
      const chain = await client.create(ecCsr().csrPem, { token: t, validity: 0 });
      const leaf = parseCertificate(chain[0]!);
      const life = (leaf.notAfter.getTime() - leaf.notBefore.getTime()) / 1000;
      assert.equal(life, 86400 + 120);
      const short = parseCertificate((await client.create(ecCsr().csrPem, { token: t, validity: 3600 }))[0]!);
      assert.equal((short.notAfter.getTime() - short.notBefore.getTime()) / 1000, 3600 + 120);
      await rejects(
        client.create(ecCsr().csrPem, { token: t, validity: 91 * 86400 }),
        grpc.status.INVALID_ARGUMENT,
        /exceeds the maximum 90d/,
      );
    });

    test("bad CSRs are INVALID_ARGUMENT with the reason", async () => {
      const t = await token();
      await rejects(client.create("not a csr", { token: t }), grpc.status.INVALID_ARGUMENT, /not PEM/);
      await rejects(
        client.create(opensslCsr(["-newkey", "rsa:1024"]).csrPem, { token: t }),
        grpc.status.INVALID_ARGUMENT,
        /1024 bits is too small/,
      );
    });

    test("ImpersonatedIdentity only for trusted node accounts", async () => {
      const csr = ecCsr().csrPem;
      const target = "spiffe://cluster.local/ns/shop/sa/cart";
      await rejects(
        client.create(csr, { token: await token(), metadata: { ImpersonatedIdentity: target } }),
        grpc.status.PERMISSION_DENIED,
        /trustedNodeAccounts/,
      );
      const zt = await token({ ns: "istio-system", sa: "ztunnel" });
      const chain = await client.create(csr, { token: zt, metadata: { ImpersonatedIdentity: target } });
      assert.deepEqual(parseCertificate(chain[0]!).sans.uris, [target]);
      await rejects(
        client.create(csr, { token: zt, metadata: { ImpersonatedIdentity: "spiffe://evil.org/ns/a/sa/b" } }),
        grpc.status.PERMISSION_DENIED,
        /trust domain evil.org/,
      );
    });

    test("HTTP side port: healthz, readyz, roots, metrics; trust bundle file written", async () => {
      const base = `http://127.0.0.1:${server.httpPort}`;
      assert.equal((await fetch(`${base}/healthz`)).status, 200);
      assert.equal((await fetch(`${base}/readyz`)).status, 200);
      assert.equal(await (await fetch(`${base}/roots`)).text(), server.rootsPem());
      const metrics = await (await fetch(`${base}/metrics`)).text();
      assert.match(metrics, /meshvault_csr_requests_total\{result="issued",code="OK"\} \d+/);
      assert.match(metrics, /meshvault_csr_requests_total\{result="error",code="UNAUTHENTICATED"\} \d+/);
      assert.equal(readFileSync(server.rootCertFile, "utf8"), server.rootsPem());
    });

    test("local CA keys are 0600 and reused across restarts; one server per data directory", async () => {
      const caDir = join(dir, "data", "local-ca");
      for (const f of ["root-key.pem", "ca-key.pem"])
        assert.equal(statSync(join(caDir, f)).mode & 0o777, 0o600);
      const config = loadServerConfig({
        env: {},
        overrides: { dataDir: join(dir, "data"), "listen.grpc": "127.0.0.1:0", "listen.http": "127.0.0.1:0" },
      });
      const roots = server.rootsPem();
      const bundle = readFileSync(server.rootCertFile, "utf8");
      await assert.rejects(
        startCaServer(config, { log: silentLogger(), defaultMetrics: false }),
        (e: Error) => {
          assert.equal(e.name, "ConfigError");
          assert.match(
            e.message,
            new RegExp(`dataDir .*${join(dir, "data")} is already in use .*pid ${process.pid}`),
          );
          return true;
        },
      );
      assert.equal(readFileSync(server.rootCertFile, "utf8"), bundle, "the refused server wrote nothing");
      client.close();
      await server.close();
      // The same server again (the later tests use it): same data directory, same CA.
      server = await startCaServer(serverConfig, { log: silentLogger(), defaultMetrics: false });
      await server.firstAttempt;
      client = caClient(`127.0.0.1:${server.grpcPort}`, server.rootsPem());
      assert.equal(server.rootsPem(), roots);
    });

    test("the server's own TLS certificate has the configured DNS SANs and is renewed before expiry", async () => {
      const config = loadServerConfig({
        env: {},
        overrides: {
          dataDir: join(dir, "data-serving"),
          "listen.grpc": "127.0.0.1:0",
          "listen.http": "127.0.0.1:0",
          "servingCertificate.ttl": "4s",
          "servingCertificate.dnsNames": ["ca.example.internal"],
          grpcServer,
        },
      });
      const s = await startCaServer(config, { log: silentLogger(), defaultMetrics: false });
      await s.firstAttempt;
      const peer = () =>
        new Promise<tls.PeerCertificate>((resolve, reject) => {
          const sock = tls.connect(
            {
              host: "127.0.0.1",
              port: s.grpcPort,
              ca: s.rootsPem(),
              servername: "ca.example.internal",
              ALPNProtocols: ["h2"],
            },
            () => {
              resolve(sock.getPeerCertificate());
              sock.end();
            },
          );
          sock.on("error", reject);
        });
      try {
        const first = await peer();
        assert.match(first.subjectaltname ?? "", /DNS:ca\.example\.internal/);
        assert.match(
          first.subjectaltname ?? "",
          /URI:spiffe:\/\/cluster\.local\/ns\/istio-system\/sa\/meshvault/,
        );
        let second = first;
        for (let i = 0; i < 40 && second.serialNumber === first.serialNumber; i++) {
          await new Promise((r) => setTimeout(r, 250));
          second = await peer();
        }
        assert.notEqual(second.serialNumber, first.serialNumber, "serving certificate was renewed");
      } finally {
        await s.close();
      }
    });

    test("names: a trusted issuer's token with a namespace or service account Kubernetes would never allow is UNAUTHENTICATED", async () => {
      const csr = ecCsr().csrPem;
      for (const [ns, sa, re] of [
        ["kube-system/sa/admin", "x", /namespace "kube-system\/sa\/admin" is not a DNS-1123 label/],
        ["a/b", "sleep", /namespace "a\/b" is not a DNS-1123 label/],
        ["Default", "sleep", /namespace "Default" is not a DNS-1123 label/],
        ["n".repeat(300), "sleep", /is 300 characters; a namespace \(DNS-1123 label\) has at most 63/],
        ["default", "x/sa/y", /service account "x\/sa\/y" is not a DNS-1123 subdomain/],
        [
          "default",
          "s".repeat(254),
          /is 254 characters; a service account \(DNS-1123 subdomain\) has at most 253/,
        ],
        ["default", "..", /service account "\.\." is not a DNS-1123 subdomain/],
      ] as const) {
        await rejects(
          client.create(csr, { token: await token({ ns, sa }) }),
          grpc.status.UNAUTHENTICATED,
          re,
        );
      }
      // Valid extremes still work: a 63-character namespace, a dotted service account.
      const ns = "n".repeat(63);
      const chain = await client.create(csr, { token: await token({ ns, sa: "web.v2" }) });
      assert.deepEqual(parseCertificate(chain[0]!).sans.uris, [`spiffe://${TD}/ns/${ns}/sa/web.v2`]);
    });

    test("ImpersonatedIdentity must be exactly spiffe://<td>/ns/<ns>/sa/<sa> with valid names: INVALID_ARGUMENT otherwise", async () => {
      const csr = ecCsr().csrPem;
      const zt = await token({ ns: "istio-system", sa: "ztunnel" });
      for (const [id, re] of [
        ["spiffe://cluster.local", /not a workload ID/],
        ["spiffe://cluster.local/ns/istio-system/sa/istiod/x", /not a workload ID/],
        ["spiffe://cluster.local/ns/a", /not a workload ID/],
        ["spiffe://cluster.local/ns/Default/sa/x", /namespace "Default" is not a DNS-1123 label/],
        ["spiffe://cluster.local/ns/a/sa/b_c", /service account "b_c" is not a DNS-1123 subdomain/],
        ["spiffe://cluster.local/ns/a%2fb/sa/c", /percent-encoding/],
        ["spiffe://cluster.local/ns/../sa/c", /'\.\.' segment/],
      ] as const) {
        await rejects(
          client.create(csr, { token: zt, metadata: { ImpersonatedIdentity: id } }),
          grpc.status.INVALID_ARGUMENT,
          re,
        );
      }
    });
  });
