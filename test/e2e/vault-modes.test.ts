// The four Vault modes end to end, the way an operator runs them: one server
// config YAML per mode; `meshvault vault setup -c` through the real CLI with
// the root token in its environment only; the CA server started from the same
// YAML, logging in like production (approle secret_id file, or a JWT file);
// a workload certificate over gRPC; the chain checked by openssl against the
// root Vault serves; `meshvault vault check -c` all ok; a second setup run
// changes nothing.
//
// Each mode gets a fresh OpenBao dev server (~0.3 s to start): the modes share
// default mount, policy and auth-role names, and "fresh Vault" is what setup
// is for.
import { after, describe, test } from "node:test";
import assert from "node:assert/strict";
import { X509Certificate } from "node:crypto";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { SignJWT, exportSPKI, generateKeyPair } from "jose";
import { stringify as toYaml } from "yaml";
import { loadServerConfig } from "../../src/config/load.js";
import { mintLocalToken } from "../../src/identity/local-issuer.js";
import { silentLogger } from "../../src/log/logger.js";
import { parseCertificate } from "../../src/pki/certificate.js";
import { startCaServer } from "../../src/server/run.js";
import { caClient } from "../helpers/ca-client.js";
import { cli as runCli, type CliResult } from "../helpers/cli.js";
import { startOpenBao, type OpenBao } from "../helpers/openbao.js";
import {
  EC_P256_KEY,
  RSA_2048_KEY,
  openssl,
  opensslCsr,
  opensslSelfSigned,
  opensslVerify,
} from "../helpers/openssl.js";

// A developer's VAULT_* / BAO_* must not fill gaps: the YAML and the explicit
// VAULT_TOKEN for setup are the only inputs.
for (const k of Object.keys(process.env)) if (/^(VAULT|BAO)_/.test(k)) delete process.env[k];

const TD = "cluster.local";
const SLEEP = `spiffe://${TD}/ns/default/sa/sleep`;
const JWT_ISSUER = "https://issuer.e2e.test";
const JWT_SUBJECT = "system:serviceaccount:istio-system:meshvault";

const work = mkdtempSync(join(tmpdir(), "meshvault-e2e-vault-"));
const started: OpenBao[] = [];
after(async () => {
  for (const b of started) await b.stop();
  rmSync(work, { recursive: true, force: true });
});

/** `meshvault <args>` as a user runs it, with no VAULT_* / BAO_* from this environment. */
function cli(args: string[], env: Record<string, string> = {}): Promise<CliResult> {
  const base: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!/^(VAULT|BAO)_/.test(k)) base[k] = v;
  return runCli(args, { ...base, ...env });
}

/** GET without a token: Vault serves PKI CA certificates to anyone. */
async function vaultRootPem(bao: OpenBao, mount: string): Promise<string> {
  const r = await fetch(`${bao.addr}/v1/${mount}/ca/pem`);
  assert.equal(r.status, 200, `GET ${mount}/ca/pem`);
  return r.text();
}

const fingerprint = (pem: string): string => new X509Certificate(pem).fingerprint256;

interface ServerLogin {
  /** The YAML's `vault.auth`. */
  auth: Record<string, unknown>;
  /** Setup flags the config cannot express (jwt validation keys, bound claims). */
  setupFlags: string[];
  /** Secrets that must never appear in any output. */
  secrets(): string[];
}

function approleLogin(dir: string): ServerLogin {
  const secretIdFile = join(dir, "secret-id");
  return {
    auth: { method: "approle", roleIdFile: join(dir, "role-id"), secretIdFile },
    setupFlags: [],
    secrets: () => [readFileSync(secretIdFile, "utf8").trim()],
  };
}

/** jwt auth validated offline by Vault against a public key; the server's JWT sits in a file. */
async function jwtLogin(dir: string): Promise<ServerLogin> {
  const { privateKey, publicKey } = await generateKeyPair("ES256");
  const pub = join(dir, "jwt-pub.pem");
  writeFileSync(pub, await exportSPKI(publicKey));
  const jwt = await new SignJWT({})
    .setProtectedHeader({ alg: "ES256" })
    .setIssuer(JWT_ISSUER)
    .setAudience("vault")
    .setSubject(JWT_SUBJECT)
    .setIssuedAt()
    .setExpirationTime("1h")
    .sign(privateKey);
  const tokenFile = join(dir, "server.jwt");
  writeFileSync(tokenFile, jwt, { mode: 0o600 });
  return {
    auth: { method: "jwt", role: "meshvault", tokenFile },
    setupFlags: [
      "--jwt-public-key",
      pub,
      "--bound-issuer",
      JWT_ISSUER,
      "--audience",
      "vault",
      "--bound-subject",
      JWT_SUBJECT,
    ],
    secrets: () => [jwt],
  };
}

interface ModeCase {
  name: string;
  authority: Record<string, unknown>;
  login(dir: string): ServerLogin | Promise<ServerLogin>;
  /** Mode-specific setup flags (files to import or store). */
  setupFlags(dir: string): string[];
  /** The root the issued chain must end in, read from Vault. */
  vaultRoot(bao: OpenBao): Promise<string>;
  /** leaf + intermediates + root. */
  chainLength: number;
}

/** Seed 003's root: `openssl req -x509` (RSA, /O=my-org); bundle = key + certificate. */
function opensslRootBundle(dir: string): string {
  const key = join(dir, "root-key.pem");
  const cert = join(dir, "root-cert.pem");
  opensslSelfSigned({ keyArgs: RSA_2048_KEY, days: 3650, subj: "/O=my-org", cert, key, extra: ["-sha256"] });
  const bundle = join(dir, "root-bundle.pem");
  writeFileSync(bundle, readFileSync(key, "utf8") + readFileSync(cert, "utf8"), { mode: 0o600 });
  return bundle;
}

/** Seed 001's CA: an openssl root and an intermediate (the signing CA istiod loads from KV). */
function opensslKvCa(dir: string): { cert: string; key: string; root: string } {
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
  const root = join(dir, "kv-root.pem");
  const rootKey = join(dir, "kv-root-key.pem");
  opensslSelfSigned({
    keyArgs: EC_P256_KEY,
    days: 3650,
    subj: "/O=seed-001/CN=root",
    cert: root,
    key: rootKey,
  });
  const key = join(dir, "kv-ca-key.pem");
  const csr = join(dir, "kv-ca.csr");
  const cert = join(dir, "kv-ca.pem");
  openssl(["req", "-new", ...ec, "-keyout", key, "-out", csr, "-subj", "/O=cluster.local/CN=istiod-ca"]);
  const ext = join(dir, "kv-ca.ext");
  writeFileSync(
    ext,
    [
      "basicConstraints=critical,CA:TRUE,pathlen:0",
      "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
      "subjectKeyIdentifier=hash",
      "authorityKeyIdentifier=keyid:always",
      "",
    ].join("\n"),
  );
  openssl([
    "x509",
    "-req",
    "-in",
    csr,
    "-CA",
    root,
    "-CAkey",
    rootKey,
    "-CAcreateserial",
    "-days",
    "365",
    "-sha256",
    "-extfile",
    ext,
    "-out",
    cert,
  ]);
  return { cert, key, root };
}

const MODES: ModeCase[] = [
  {
    name: "vault-sign (seed 000), identity server, approle",
    authority: { type: "vault-sign", mount: "pki_int", role: "meshvault-workload", identity: "server" },
    login: approleLogin,
    setupFlags: () => [],
    vaultRoot: (bao) => vaultRootPem(bao, "pki"),
    chainLength: 3,
  },
  {
    name: "vault-kv (seed 001), jwt",
    authority: {
      type: "vault-kv",
      certificate: "vault:secret/data/pki/istiod#certificate",
      privateKey: "vault:secret/data/pki/istiod#privateKey",
      root: "vault:secret/data/pki/istiod#root",
      pollInterval: "5s",
    },
    login: jwtLogin,
    setupFlags: (dir) => {
      const ca = opensslKvCa(dir);
      return ["--ca-cert", ca.cert, "--ca-key", ca.key, "--root", ca.root];
    },
    // No PKI mount in this mode: the root is the one stored in KV, read back from Vault.
    vaultRoot: async (bao) => {
      const r = await fetch(`${bao.addr}/v1/secret/data/pki/istiod`, {
        headers: { "X-Vault-Token": bao.rootToken },
      });
      assert.equal(r.status, 200, "read secret/data/pki/istiod");
      const body = (await r.json()) as { data: { data: Record<string, string> } };
      return body.data.data["root"]!;
    },
    chainLength: 3,
  },
  {
    name: "vault-intermediate csr (seed 002), approle",
    authority: { type: "vault-intermediate", mode: "csr", rootMount: "pki", ttl: "720h" },
    login: approleLogin,
    setupFlags: () => [],
    vaultRoot: (bao) => vaultRootPem(bao, "pki"),
    chainLength: 3,
  },
  {
    name: "vault-intermediate exported (seed 003) with an openssl root imported, jwt",
    authority: {
      type: "vault-intermediate",
      mode: "exported",
      rootMount: "pki",
      intermediateMount: "pki_int",
      ttl: "720h",
    },
    login: jwtLogin,
    setupFlags: (dir) => ["--import-root", opensslRootBundle(dir)],
    vaultRoot: (bao) => vaultRootPem(bao, "pki"),
    chainLength: 3,
  },
];

describe("vault setup -> server -> CreateCertificate -> openssl verify, per mode", () => {
  MODES.forEach((m, i) => {
    test(m.name, async () => {
      const t0 = Date.now();
      const dir = join(work, `mode-${i}`);
      const data = join(dir, "data");
      const bao = await startOpenBao();
      started.push(bao);
      try {
        // The operator's files.
        mkdirSync(dir, { recursive: true, mode: 0o700 });
        const login = await m.login(dir);
        const yamlFile = join(dir, "server.yaml");
        writeFileSync(
          yamlFile,
          toYaml({
            trustDomain: TD,
            dataDir: data,
            listen: { grpc: "127.0.0.1:0", http: "127.0.0.1:0" },
            log: { level: "silent" },
            authority: m.authority,
            vault: { address: bao.addr, auth: login.auth },
          }),
        );
        const modeFlags = m.setupFlags(dir);
        const setupArgs = ["vault", "setup", "-c", yamlFile, ...login.setupFlags, ...modeFlags];
        const adminEnv = { VAULT_TOKEN: bao.rootToken };

        // 1. vault setup with the root token, in its environment only.
        const s1 = await cli(setupArgs, adminEnv);
        assert.equal(s1.code, 0, `vault setup failed:\n${s1.out}\n${s1.err}`);
        assert.match(s1.out, /\d+ changes?\n/, s1.out);
        assert.doesNotMatch(s1.out, /FAIL/, s1.out);
        if (login.auth["method"] === "approle") {
          assert.equal(statSync(String(login.auth["secretIdFile"])).mode & 0o777, 0o600);
        }
        const secrets = [bao.rootToken, ...login.secrets()];
        for (const s of secrets) assert.ok(!`${s1.out}${s1.err}`.includes(s), "setup printed a secret");

        // 2. The server from the same YAML, logging in with its own credentials (no VAULT_TOKEN anywhere).
        const config = loadServerConfig({ file: yamlFile, env: {} });
        assert.equal(config.authority.type, m.authority["type"]);
        const server = await startCaServer(config, { log: silentLogger(), defaultMetrics: false });
        await server.firstAttempt;
        let chain: string[];
        try {
          const client = caClient(`127.0.0.1:${server.grpcPort}`, server.rootsPem());
          try {
            const token = await mintLocalToken({
              dataDir: config.dataDir,
              trustDomain: TD,
              namespace: "default",
              serviceAccount: "sleep",
            });
            const csr = opensslCsr(["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"], "/O=").csrPem;
            chain = await client.create(csr, { token, validity: 3600 });
          } finally {
            client.close();
          }
        } finally {
          await server.close();
        }

        // 3. The chain reaches the root Vault holds, for client and server use.
        const vaultRoot = await m.vaultRoot(bao);
        assert.equal(chain.length, m.chainLength, chain.map((c) => parseCertificate(c).subject).join(" / "));
        assert.equal(fingerprint(chain.at(-1)!), fingerprint(vaultRoot), "the chain ends in Vault's root");
        assert.deepEqual(parseCertificate(chain[0]!).sans.uris, [SLEEP]);
        for (const purpose of ["sslclient", "sslserver"]) {
          const [ok, out] = opensslVerify(vaultRoot, chain.slice(1, -1).join(""), chain[0]!, purpose);
          assert.ok(ok, `openssl verify -purpose ${purpose}: ${out}`);
        }
        if (m.authority["type"] === "vault-intermediate" && m.authority["mode"] === "exported") {
          const imported = readFileSync(join(dir, "root-cert.pem"), "utf8");
          assert.equal(fingerprint(vaultRoot), fingerprint(imported), "Vault's root is the openssl root");
        }

        // 4. vault check with the server's own login: every line ok.
        const c = await cli(["vault", "check", "-c", yamlFile]);
        assert.equal(c.code, 0, `vault check failed:\n${c.out}\n${c.err}`);
        const lines = c.out.trim().split("\n");
        assert.match(lines[0]!, /^meshvault vault check: mode /);
        assert.match(lines.at(-1)!, /^all \d+ checks passed$/);
        for (const l of lines.slice(1, -1)) assert.match(l, /^ok {4}\S/, `not ok: ${l}\n${c.out}`);
        assert.ok(lines.length >= 6, c.out);
        for (const s of secrets) assert.ok(!`${c.out}${c.err}`.includes(s), "check printed a secret");

        // 5. A second setup run changes nothing.
        const s2 = await cli(setupArgs, adminEnv);
        assert.equal(s2.code, 0, `second vault setup failed:\n${s2.out}\n${s2.err}`);
        assert.match(s2.out, /\nnothing to change\n/, s2.out);
        assert.doesNotMatch(s2.out, /^(created|updated)/m, s2.out);
        process.stderr.write(`# ${m.name}: ${Date.now() - t0} ms\n`);
        if (process.env["E2E_DEBUG"])
          process.stderr.write(`${s1.out}\n${c.out}\n${s2.out}\n${chain.join("")}\n`);
      } finally {
        await bao.stop();
      }
    });
  });
});
