// TokenReview authentication of the CA server against a REAL kube-apiserver:
// projected tokens from the TokenRequest API, over the real Istio CA gRPC API.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as grpc from "@grpc/grpc-js";
import { loadServerConfig } from "../../src/config/load.js";
import { startCaServer, type CaServerHandle } from "../../src/server/run.js";
import { silentLogger } from "../../src/log/logger.js";
import { parseCertificate } from "../../src/pki/certificate.js";
import { AuthenticatorUnavailableError } from "../../src/identity/authenticator.js";
import { loadKubeConfig } from "../../src/kube/client.js";
import { TokenReviewAuthenticator } from "../../src/kube/tokenreview.js";
import { caClient, rejects, type CaClient } from "../helpers/ca-client.js";
import { opensslCsr } from "../helpers/openssl.js";
import { forgeServiceAccountToken, startKube, type KubeEnv } from "../helpers/kube.js";

const NS = "mesh-test";
let kube: KubeEnv;
let server: CaServerHandle;
let client: CaClient;
let dir: string;

const csr = (): string => opensslCsr(["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"], "/O=").csrPem;

const tokenReview = (): TokenReviewAuthenticator => {
  const a = server.kubernetes?.authenticators[0];
  assert.ok(a instanceof TokenReviewAuthenticator);
  return a;
};

before(async () => {
  kube = await startKube();
  await kube.createNamespace(NS);
  await kube.createServiceAccount(NS, "workload");
  dir = mkdtempSync(join(tmpdir(), "meshvault-tokenreview-"));
  const config = loadServerConfig({
    env: {},
    overrides: {
      dataDir: join(dir, "data"),
      "listen.grpc": "127.0.0.1:0",
      "listen.http": "127.0.0.1:0",
      "authentication.localIssuer": false,
      "authentication.clientCertificate": false,
      kubernetes: {
        kubeconfig: kube.kubeconfigPath,
        clusterId: "cluster-a",
        rootPublisher: { enabled: false },
      },
    },
  });
  server = await startCaServer(config, { log: silentLogger(), defaultMetrics: false });
  await server.firstAttempt;
  client = caClient(`127.0.0.1:${server.grpcPort}`, server.rootsPem());
});

after(async () => {
  client?.close();
  await server?.close();
  await kube?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

test("a real projected token (audience istio-ca) gets its SPIFFE ID", async () => {
  const token = await kube.requestToken(NS, "workload", ["istio-ca"], 3600);
  const chain = await client.create(csr(), { token, clusterId: "cluster-a" });
  assert.ok(chain.length >= 2, "leaf + root");
  const leaf = parseCertificate(chain[0]!);
  assert.deepEqual(leaf.sans.uris, [`spiffe://cluster.local/ns/${NS}/sa/workload`]);
  // No clusterid header at all is fine too (the agent omits it when unset).
  const again = await client.create(csr(), { token });
  assert.deepEqual(parseCertificate(again[0]!).sans.uris, [`spiffe://cluster.local/ns/${NS}/sa/workload`]);
});

test("a burst with one token makes one TokenReview (cached until exp, in-flight shared)", async () => {
  const token = await kube.requestToken(NS, "workload", ["istio-ca"], 3600);
  const before = tokenReview().reviews;
  const chains = await Promise.all(Array.from({ length: 20 }, () => client.create(csr(), { token })));
  assert.equal(chains.length, 20);
  assert.equal(tokenReview().reviews - before, 1);
  await client.create(csr(), { token });
  assert.equal(tokenReview().reviews - before, 1);
});

test("a token for another audience is refused", async () => {
  const token = await kube.requestToken(NS, "workload", ["some-other-audience"], 3600);
  await rejects(client.create(csr(), { token }), grpc.status.UNAUTHENTICATED, /rejected the token/);
});

test("a forged token (unknown signing key) is refused", async () => {
  await rejects(
    client.create(csr(), { token: forgeServiceAccountToken(NS, "workload", kube.issuer) }),
    grpc.status.UNAUTHENTICATED,
    /rejected the token/,
  );
});

test("a non-service-account user is refused", async () => {
  // The harness' admin token is a valid credential, but not a service account.
  await rejects(
    client.create(csr(), { token: kube.adminToken }),
    grpc.status.UNAUTHENTICATED,
    /rejected|not a service account/,
  );
});

test("clusterid naming another cluster is refused, naming both clusters", async () => {
  const token = await kube.requestToken(NS, "workload", ["istio-ca"], 3600);
  await rejects(
    client.create(csr(), { token, clusterId: "cluster-b" }),
    grpc.status.UNAUTHENTICATED,
    /"cluster-b".*"cluster-a"/,
  );
});

test("a deleted service account's fresh token is refused", async () => {
  await kube.createServiceAccount(NS, "doomed");
  // Never reviewed before (the API server caches positive reviews for 10 s, and so do we).
  const token = await kube.requestToken(NS, "doomed", ["istio-ca"], 3600);
  await kube.deleteServiceAccount(NS, "doomed");
  let last: grpc.ServiceError | undefined;
  for (let i = 0; i < 50; i++) {
    try {
      await client.create(csr(), { token: `${token}` });
    } catch (err) {
      last = err as grpc.ServiceError;
      break;
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  assert.ok(last, "expected a refusal");
  assert.equal(last.code, grpc.status.UNAUTHENTICATED, last.details);
});

test("our own Kubernetes credentials refused -> UNAVAILABLE-class error, not UNAUTHENTICATED", async () => {
  const badKc = loadKubeConfig({ kubeconfig: await kube.writeKubeconfig("not-a-valid-token", "bad") });
  const auth = new TokenReviewAuthenticator({ kubeConfig: badKc, trustDomain: "cluster.local" });
  const token = await kube.requestToken(NS, "workload", ["istio-ca"], 3600);
  await assert.rejects(
    auth.authenticate({ authorization: `Bearer ${token}`, peerCertificates: [] }),
    (e: Error) => {
      assert.ok(e instanceof AuthenticatorUnavailableError, e.message);
      assert.match(e.message, /HTTP 401/);
      assert.ok(!e.message.includes(token), "token must not appear in messages");
      return true;
    },
  );
});

test("API server down -> UNAVAILABLE over gRPC", async () => {
  const token = await kube.requestToken(NS, "workload", ["istio-ca"], 3600);
  await kube.stop();
  await rejects(
    client.create(csr(), { token }),
    grpc.status.UNAVAILABLE,
    /TokenReview at https:\/\/127\.0\.0\.1/,
  );
});
