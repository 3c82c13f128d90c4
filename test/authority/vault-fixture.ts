// Shared setup for the Vault authority tests: a real OpenBao configured through its HTTP
// API with the root token (PKI mounts, roles, policies, approle and jwt auth), JWTs that
// both meshvault and Vault accept, and a CA server configuration per authority.
// The authorities themselves then log in like production: approle or jwt, never root.
import { KeyObject, type webcrypto } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { exportJWK, generateKeyPair, SignJWT, type CryptoKey } from "jose";
import { loadServerConfig } from "../../src/config/load.js";
import type { ServerConfig } from "../../src/config/schema.js";
import { silentLogger } from "../../src/log/logger.js";
import { startCaServer, type CaServerHandle, type StartOptions } from "../../src/server/run.js";
import { VaultClient } from "../../src/vault/index.js";
import { caClient, type CaClient } from "../helpers/ca-client.js";
import { startOpenBao, type OpenBao } from "../helpers/openbao.js";

export const TD = "cluster.local";
export const ISSUER = "https://kubernetes.default.svc.cluster.local";
export const ROLE = "meshvault-workload";

// A developer's VAULT_* / BAO_* must not fill gaps in the test configurations.
for (const k of Object.keys(process.env)) if (/^(VAULT|BAO)_/.test(k)) delete process.env[k];

export interface VaultFixture {
  bao: OpenBao;
  /** Root-token client, for configuring Vault only. */
  admin: VaultClient;
  dir: string;
  jwksFile: string;
  /** Service-account-like JWT (audience istio-ca) that meshvault and Vault both accept. */
  token(ns: string, sa: string): Promise<string>;
  /** Public key PEM Vault's jwt auth validates with. */
  jwtPublicKeyPem: string;
  close(): Promise<void>;
}

export async function startVaultFixture(persistent: boolean): Promise<VaultFixture> {
  const bao = await startOpenBao({ persistent });
  const admin = new VaultClient(
    { address: bao.addr, skipVerify: false },
    { token: bao.rootToken, retry: { maxAttempts: 1 } },
  );
  const dir = mkdtempSync(join(tmpdir(), "meshvault-vault-authority-"));
  const { privateKey, publicKey } = await generateKeyPair("RS256", { extractable: true });
  const jwk = await exportJWK(publicKey);
  const jwksFile = join(dir, "jwks.json");
  writeFileSync(jwksFile, JSON.stringify({ keys: [{ ...jwk, kid: "k1", alg: "RS256" }] }));
  const jwtPublicKeyPem = KeyObject.from(publicKey as webcrypto.CryptoKey).export({
    type: "spki",
    format: "pem",
  }) as string;
  const token = (ns: string, sa: string, key: CryptoKey = privateKey): Promise<string> =>
    new SignJWT({ "kubernetes.io": { namespace: ns, serviceaccount: { name: sa } } })
      .setProtectedHeader({ alg: "RS256", kid: "k1" })
      .setIssuer(ISSUER)
      .setSubject(`system:serviceaccount:${ns}:${sa}`)
      .setAudience("istio-ca")
      .setIssuedAt()
      .setExpirationTime(Math.floor(Date.now() / 1000) + 3600)
      .sign(key);
  return {
    bao,
    admin,
    dir,
    jwksFile,
    jwtPublicKeyPem,
    token,
    close: async () => {
      admin.close();
      await bao.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Root CA at `pki`, intermediate at `pki_int` (imported with its root), workload role on `pki_int`. */
export async function setupPki(admin: VaultClient): Promise<{ rootPem: string }> {
  await admin.write("sys/mounts/pki", { type: "pki", config: { max_lease_ttl: "87600h" } });
  const root = await admin.write<{ certificate: string }>("pki/root/generate/internal", {
    common_name: "meshvault test root",
    uri_sans: `spiffe://${TD}`,
    key_type: "ec",
    key_bits: 256,
    ttl: "87600h",
  });
  await admin.write("sys/mounts/pki_int", { type: "pki", config: { max_lease_ttl: "8760h" } });
  const csr = await admin.write<{ csr: string }>("pki_int/intermediate/generate/internal", {
    common_name: "meshvault test intermediate",
    key_type: "ec",
    key_bits: 256,
  });
  const signed = await admin.write<{ certificate: string }>("pki/root/sign-intermediate", {
    csr: csr!.data!.csr,
    common_name: "meshvault test intermediate",
    ttl: "8760h",
    format: "pem",
  });
  const rootPem = root!.data!.certificate;
  await admin.write("pki_int/intermediate/set-signed", {
    certificate: `${signed!.data!.certificate}\n${rootPem}`,
  });
  // identity: workload signs the server's own serving certificate with <role>-serving.
  for (const role of [ROLE, `${ROLE}-serving`])
    await admin.write(`pki_int/roles/${role}`, {
      allowed_uri_sans: `spiffe://${TD}/*`,
      require_cn: false,
      use_csr_common_name: false,
      use_csr_sans: false,
      // The CA server's own serving certificate carries DNS names and 127.0.0.1.
      allow_any_name: true,
      enforce_hostnames: false,
      allow_ip_sans: true,
      key_type: "any",
      key_usage: ["DigitalSignature", "KeyEncipherment"],
      ext_key_usage: ["ServerAuth", "ClientAuth"],
      no_store: true,
      max_ttl: "72h",
    });
  return { rootPem: rootPem.endsWith("\n") ? rootPem : `${rootPem}\n` };
}

export async function writePolicy(
  admin: VaultClient,
  name: string,
  paths: Record<string, string[]>,
): Promise<void> {
  const policy = Object.entries(paths)
    .map(([p, caps]) => `path "${p}" { capabilities = [${caps.map((c) => `"${c}"`).join(", ")}] }`)
    .join("\n");
  await admin.write(`sys/policies/acl/${name}`, { policy });
}

/** An approle role with `policies`; role_id and secret_id written to 0600 files. */
export async function approleLogin(
  fx: VaultFixture,
  name: string,
  policies: string[],
): Promise<{ roleIdFile: string; secretIdFile: string; wrongSecretIdFile: string }> {
  const { admin, dir } = fx;
  const mounts = await admin.read<Record<string, unknown>>("sys/auth");
  if (!mounts?.data?.["approle/"]) await admin.write("sys/auth/approle", { type: "approle" });
  await admin.write(`auth/approle/role/${name}`, {
    token_policies: policies,
    token_ttl: "1h",
    token_max_ttl: "4h",
  });
  const roleId = await admin.read<{ role_id: string }>(`auth/approle/role/${name}/role-id`);
  const secretId = await admin.write<{ secret_id: string }>(`auth/approle/role/${name}/secret-id`, {});
  const roleIdFile = join(dir, `${name}.role-id`);
  const secretIdFile = join(dir, `${name}.secret-id`);
  const wrongSecretIdFile = join(dir, `${name}.wrong-secret-id`);
  writeFileSync(roleIdFile, roleId!.data!.role_id, { mode: 0o600 });
  writeFileSync(secretIdFile, secretId!.data!.secret_id, { mode: 0o600 });
  writeFileSync(wrongSecretIdFile, "00000000-1111-2222-3333-444444444444", { mode: 0o600 });
  return { roleIdFile, secretIdFile, wrongSecretIdFile };
}

/** jwt auth at auth/jwt validating offline with the fixture's public key; one role per call. */
export async function jwtRole(
  fx: VaultFixture,
  name: string,
  policies: string[],
  subjects: string[],
): Promise<void> {
  const { admin } = fx;
  const mounts = await admin.read<Record<string, unknown>>("sys/auth");
  if (!mounts?.data?.["jwt/"]) {
    await admin.write("sys/auth/jwt", { type: "jwt" });
    await admin.write("auth/jwt/config", {
      jwt_validation_pubkeys: [fx.jwtPublicKeyPem],
      bound_issuer: ISSUER,
    });
  }
  await admin.write(`auth/jwt/role/${name}`, {
    role_type: "jwt",
    bound_audiences: ["istio-ca"],
    user_claim: "sub",
    bound_claims: { sub: subjects },
    token_policies: policies,
    token_ttl: "10m",
  });
}

/** CA server configuration: ephemeral ports, the fixture's JWKS for callers, the given authority and vault section. */
export function serverConfig(
  fx: VaultFixture,
  name: string,
  authority: Record<string, unknown>,
  vault: Record<string, unknown>,
): ServerConfig {
  return loadServerConfig({
    env: {},
    overrides: {
      dataDir: join(fx.dir, `data-${name}`),
      "listen.grpc": "127.0.0.1:0",
      "listen.http": "127.0.0.1:0",
      "authentication.jwt": [{ issuer: ISSUER, jwksFile: fx.jwksFile }],
      // No key of meshvault's own in the data dir: lets tests check no CA key is written.
      "authentication.localIssuer": false,
      authority,
      vault: { address: fx.bao.addr, ...vault },
    },
  });
}

/** The `vault` section logging in with `login`'s approle files (or another secret_id file). */
export function approleVault(
  login: { roleIdFile: string; secretIdFile: string },
  secretIdFile = login.secretIdFile,
): Record<string, unknown> {
  return { auth: { method: "approle", roleIdFile: login.roleIdFile, secretIdFile } };
}

/** CA servers and their gRPC clients started by one test file; close() them in its after(). */
export class CaServers {
  private readonly servers: CaServerHandle[] = [];
  private readonly clients: CaClient[] = [];

  /** Starts a CA server (silent, no default metrics) and a gRPC client trusting its roots. */
  async start(
    config: ServerConfig,
    options: StartOptions = {},
  ): Promise<{ server: CaServerHandle; client: CaClient }> {
    const server = await startCaServer(config, { log: silentLogger(), defaultMetrics: false, ...options });
    await server.firstAttempt;
    this.servers.push(server);
    const client = caClient(`127.0.0.1:${server.grpcPort}`, server.rootsPem());
    this.clients.push(client);
    return { server, client };
  }

  /**
   * Why a CA server from `config` is not ready after its first start attempt (it stays up,
   * retrying); undefined when it is ready. The server is kept for close().
   */
  async notReadyReason(config: ServerConfig): Promise<string | undefined> {
    const s = await startCaServer(config, { log: silentLogger(), defaultMetrics: false });
    await s.firstAttempt;
    this.servers.push(s);
    const r = s.readiness();
    return r.ready ? undefined : r.reason;
  }

  async close(): Promise<void> {
    for (const c of this.clients) c.close();
    for (const s of this.servers) await s.close().catch(() => undefined);
  }
}

/** Polls `fn` until it returns without throwing, or gives up after `ms`. */
export async function eventually<T>(fn: () => Promise<T>, ms: number, stepMs = 200): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    try {
      return await fn();
    } catch (err) {
      if (Date.now() > end) throw err;
      await new Promise((r) => setTimeout(r, stepMs));
    }
  }
}
