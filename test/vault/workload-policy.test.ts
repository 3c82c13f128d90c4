// identity: workload means what the README says: Vault itself signs only the caller's own ID.
// Real kube-apiserver, real OpenBao with its own kubernetes auth method reviewing tokens against
// that apiserver, `meshvault vault setup` driven as a CLI process, then:
//  - workload demo/sleep gets its SVID through meshvault (vault-sign, identity: workload);
//  - the same token logged in to Vault directly cannot sign spiffe://cluster.local/ns/other/sa/admin,
//    nor DNS/IP SANs; and a CSR hiding a DNS SAN and CA:true in a second extensionRequest
//    attribute gets neither (the role ignores the CSR's SANs; Vault never honours CA:true).
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { X509Certificate } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { loadServerConfig } from "../../src/config/load.js";
import { silentLogger } from "../../src/log/logger.js";
import { parseCertificate } from "../../src/pki/certificate.js";
import { buildCsr } from "../../src/pki/csr.js";
import { bitString, oid, seq, set, smallInteger, tlv } from "../../src/pki/der.js";
import { encodeBasicConstraints, encodeDnsSans, encodeExtension } from "../../src/pki/extensions.js";
import { generateKeyPairFor, signatureSchemeFor, signWith, spkiDer } from "../../src/pki/keys.js";
import { OID } from "../../src/pki/oids.js";
import { encodePem } from "../../src/pki/pem.js";
import { startCaServer, type CaServerHandle } from "../../src/server/run.js";
import { VaultClient } from "../../src/vault/index.js";
import { caClient, type CaClient } from "../helpers/ca-client.js";
import { cli } from "../helpers/cli.js";
import { startKube, type KubeEnv } from "../helpers/kube.js";
import { startOpenBao, type OpenBao } from "../helpers/openbao.js";
import { zlint } from "../helpers/zlint.js";

const TD = "cluster.local";
const ROLE = "meshvault-workload";
let kube: KubeEnv;
let bao: OpenBao;
let dir: string;
let server: CaServerHandle | undefined;
let client: CaClient | undefined;
let admin: VaultClient;
let setupOut = "";

before(async () => {
  dir = mkdtempSync(join(tmpdir(), "meshvault-workload-policy-"));
  [kube, bao] = await Promise.all([startKube(), startOpenBao()]);
  for (const ns of ["demo", "other"]) await kube.createNamespace(ns);
  await kube.createServiceAccount("demo", "sleep");
  await kube.createServiceAccount("other", "admin");
  writeFileSync(join(dir, "kube-ca.pem"), kube.caPem);
  // A credential that may call TokenReview (system:masters here; system:auth-delegator in a cluster).
  writeFileSync(join(dir, "reviewer.jwt"), kube.adminToken);
  const env = { ...process.env, VAULT_ADDR: bao.addr, BAO_ADDR: bao.addr, VAULT_TOKEN: bao.rootToken };
  const flags = [
    "vault",
    "setup",
    "--address",
    bao.addr,
    "--mode",
    "vault-sign",
    "--identity",
    "workload",
    "--workload-auth",
    "kubernetes",
    "--kubernetes-host",
    kube.server,
    "--kubernetes-ca-cert",
    join(dir, "kube-ca.pem"),
    "--token-reviewer-jwt-file",
    join(dir, "reviewer.jwt"),
  ];
  const dry = await cli([...flags, "--dry-run"], env);
  assert.equal(dry.code, 0, dry.err);
  setupOut = dry.out;
  const real = await cli(flags, env);
  assert.equal(real.code, 0, `${real.out}\n${real.err}`);
  admin = new VaultClient({ address: bao.addr, skipVerify: false });
});

after(async () => {
  client?.close();
  await server?.close();
  await Promise.all([kube?.stop(), bao?.stop()]);
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const csrFor = (uris: string[] = []): string => buildCsr(generateKeyPairFor("ec-p256").privateKey, { uris });

/**
 * The attack meshvault's old parser missed: the first extensionRequest asks for CA:true and a
 * DNS SAN, a second (empty) one is what a last-attribute-wins reader checks. Go's parser (Vault)
 * reads the first. meshvault now refuses such a CSR outright; Vault must not honour it either.
 */
function hiddenAttributeCsr(): string {
  const key = generateKeyPairFor("ec-p256").privateKey;
  const extReq = (...exts: Uint8Array[]) => seq(oid(OID.extensionRequest), set(seq(...exts)));
  const attrs = tlv(
    0xa0,
    extReq(
      encodeExtension(OID.basicConstraints, true, encodeBasicConstraints(true)),
      encodeExtension(OID.subjectAltName, false, encodeDnsSans(["evil.example.com"])),
    ),
    extReq(),
  );
  const info = seq(smallInteger(0), seq(), spkiDer(key), attrs);
  const scheme = signatureSchemeFor("ec-p256");
  return encodePem(
    "CERTIFICATE REQUEST",
    seq(info, scheme.algorithmIdentifier, bitString(signWith(key, scheme, info))),
  );
}

test("--dry-run prints the templated per-workload role and the separate serving-certificate role", () => {
  assert.match(setupOut, /ACCESSOR="\$\(vault read -field=accessor sys\/auth\/kubernetes\)"/);
  assert.match(
    setupOut,
    /allowed_uri_sans='spiffe:\/\/cluster\.local\/ns\/\{\{identity\.entity\.aliases\.'"\$ACCESSOR"'\.metadata\.service_account_namespace\}\}\/sa\/\{\{identity\.entity\.aliases\.'"\$ACCESSOR"'\.metadata\.service_account_name\}\}'/,
  );
  assert.match(setupOut, /allowed_uri_sans_template=true/);
  assert.match(setupOut, /use_csr_sans=false/);
  assert.match(setupOut, /use_csr_common_name=false/);
  assert.match(setupOut, new RegExp(`pki_int/roles/${ROLE}-serving`));
});

test("demo/sleep gets its SVID through meshvault (Vault's kubernetes auth reviews the token at the apiserver)", async () => {
  // meshvault's own login: a token with the policy setup wrote for the server.
  const t = await admin.write<unknown>(
    "auth/token/create",
    { policies: ["meshvault-sign"], ttl: "1h" },
    { token: bao.rootToken },
  );
  const serverToken = (t as unknown as { auth: { client_token: string } }).auth.client_token;
  writeFileSync(join(dir, "server.token"), serverToken);
  const config = loadServerConfig({
    env: {},
    overrides: {
      dataDir: join(dir, "data"),
      "listen.grpc": "127.0.0.1:0",
      "listen.http": "127.0.0.1:0",
      "authentication.localIssuer": false,
      kubernetes: { kubeconfig: kube.kubeconfigPath, rootPublisher: { enabled: false } },
      authority: {
        type: "vault-sign",
        mount: "pki_int",
        role: ROLE,
        identity: "workload",
        workloadAuth: { method: "kubernetes", role: ROLE },
      },
      vault: { address: bao.addr, auth: { method: "token", tokenFile: join(dir, "server.token") } },
    },
  });
  server = await startCaServer(config, { log: silentLogger(), defaultMetrics: false });
  await server.firstAttempt;
  client = caClient(`127.0.0.1:${server.grpcPort}`, server.rootsPem());
  const token = await kube.requestToken("demo", "sleep", ["istio-ca"], 3600);
  const chain = await client.create(csrFor(), { token });
  const leaf = parseCertificate(chain[0]!);
  assert.deepEqual(leaf.sans.uris, [`spiffe://${TD}/ns/demo/sa/sleep`]);
  assert.deepEqual(leaf.sans.dnsNames, []);
  // The leaf Vault made for this role is inside the RFC profile too.
  const [findings] = await zlint([chain[0]!], ["-includeSources", "RFC5280,RFC8813,RFC3279,RFC5480"]);
  assert.deepEqual(findings, [], "zlint RFC findings on Vault's leaf");
});

test("the same token logged in to Vault directly: only its own ID, no DNS/IP SANs, no CA:true", async () => {
  const token = await kube.requestToken("demo", "sleep", ["istio-ca"], 3600);
  const login = await new VaultClient({ address: bao.addr, skipVerify: false }).write<unknown>(
    "auth/kubernetes/login",
    {
      role: ROLE,
      jwt: token,
    },
  );
  const vaultToken = (login as unknown as { auth: { client_token: string } }).auth.client_token;
  const workload = new VaultClient({ address: bao.addr, skipVerify: false });
  const sign = (body: Record<string, unknown>) =>
    workload.write<{ certificate: string }>(
      `pki_int/sign/${ROLE}`,
      { format: "pem", ttl: "1h", ...body },
      { token: vaultToken },
    );

  const own = await sign({ csr: csrFor(), uri_sans: `spiffe://${TD}/ns/demo/sa/sleep` });
  assert.match(
    new X509Certificate(own!.data!.certificate).subjectAltName ?? "",
    /URI:spiffe:\/\/cluster\.local\/ns\/demo\/sa\/sleep/,
  );

  for (const [what, body] of [
    ["another workload's ID", { csr: csrFor(), uri_sans: `spiffe://${TD}/ns/other/sa/admin` }],
    ["a wildcard-looking ID", { csr: csrFor(), uri_sans: `spiffe://${TD}/ns/demo/sa/*` }],
    [
      "a DNS SAN",
      { csr: csrFor(), uri_sans: `spiffe://${TD}/ns/demo/sa/sleep`, alt_names: "istiod.istio-system.svc" },
    ],
    ["an IP SAN", { csr: csrFor(), uri_sans: `spiffe://${TD}/ns/demo/sa/sleep`, ip_sans: "127.0.0.1" }],
    ["a CN", { csr: csrFor(), common_name: "istiod.istio-system.svc" }],
  ] as const) {
    const r = await sign(body).then(
      (ok) => `issued ${new X509Certificate(ok!.data!.certificate).subjectAltName}`,
      (err: Error) => err.message,
    );
    assert.match(r, /not valid for this role|not allowed|permission denied/i, `${what}: ${r}`);
  }
  // And the serving-certificate role is not the workload's to use.
  await assert.rejects(
    workload.write(
      `pki_int/sign/${ROLE}-serving`,
      { csr: csrFor(), uri_sans: `spiffe://${TD}/ns/other/sa/admin` },
      { token: vaultToken },
    ),
    /permission denied|403/i,
  );

  // A CSR hiding CA:true and a DNS SAN in a second extensionRequest attribute gets neither.
  const hidden = await sign({
    csr: hiddenAttributeCsr(),
    uri_sans: `spiffe://${TD}/ns/demo/sa/sleep`,
  });
  const cert = new X509Certificate(hidden!.data!.certificate);
  assert.equal(cert.ca, false);
  assert.doesNotMatch(cert.subjectAltName ?? "", /DNS:/);
  assert.match(cert.subjectAltName ?? "", /^URI:spiffe:\/\/cluster\.local\/ns\/demo\/sa\/sleep$/);
});
