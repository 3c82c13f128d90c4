// `meshvault vault setup|check`: the declaration (flags, help); the Vault client, setup and
// check load only when one runs (../vault.ts).
import type { Command } from "commander";
import type { SetupFlags } from "../../vault/setup/index.js";
import { collect } from "./repeatable.js";

export interface VaultCommonFlags {
  config?: string;
  address?: string;
}
export type SetupCliFlags = SetupFlags & VaultCommonFlags & { dryRun?: boolean };
export type CheckCliFlags = SetupFlags &
  VaultCommonFlags & { roleIdFile?: string; secretIdFile?: string; authTokenFile?: string };

/** Options shared by setup and check: which mode, where it lives in Vault. */
function modeOptions(cmd: Command): Command {
  return cmd
    .option(
      "-c, --config <file>",
      "server config (YAML): set up / check exactly what its authority and vault: sections need",
    )
    .option(
      "--mode <mode>",
      "vault-sign | vault-kv | vault-intermediate (default: the config's authority.type)",
    )
    .option(
      "--trust-domain <domain>",
      "SPIFFE trust domain (default: config trustDomain, else cluster.local)",
    )
    .option("--address <url>", "Vault address (default: config vault.address, VAULT_ADDR / BAO_ADDR)")
    .option("--mount <path>", "vault-sign: the signing PKI mount (default pki_int)")
    .option("--role <name>", "vault-sign: the PKI role (default meshvault-workload)")
    .option("--identity <who>", "vault-sign: server | workload (default server)")
    .option("--root-mount <path>", "root CA mount (default pki)")
    .option(
      "--intermediate-mount <path>",
      "vault-intermediate exported: intermediate mount (default pki_int)",
    )
    .option("--intermediate-mode <mode>", "vault-intermediate: csr | exported (default csr)")
    .option("--kv-path <ref>", "vault-kv: secret reference (default vault:secret/data/pki/istiod)")
    .option("--chain <file>", "vault-kv: PEM chain file to store in field chain")
    .option("--root <file>", "vault-kv: PEM root file to store in field root")
    .option("--workload-auth <method>", "vault-sign identity workload: kubernetes | jwt (default kubernetes)")
    .option(
      "--workload-auth-mount <path>",
      "vault-sign identity workload: auth mount (default the method name)",
    )
    .option(
      "--workload-auth-role <name>",
      "vault-sign identity workload: role workloads log in to (default meshvault-workload)",
    );
}

export function registerVaultCommands(program: Command): Command {
  const vault = program.command("vault").description("set up and diagnose Vault / OpenBao for meshvault");

  modeOptions(
    vault
      .command("setup")
      .description(
        "configure Vault for one mode, idempotently: PKI mounts, root (generated or imported), intermediate, role, " +
          "least-privilege policy, auth method and role, KV secret. Uses an admin token from VAULT_TOKEN / BAO_TOKEN. " +
          "A second run changes nothing.",
      ),
  )
    .option("--dry-run", "print the equivalent vault CLI commands; contact no Vault")
    .option("--sign-at-root", "vault-sign: sign workloads at the root mount, without an intermediate")
    .option(
      "--import-root <bundle.pem>",
      "import this root (certificate + private key PEM, e.g. from openssl) instead of generating one",
    )
    .option(
      "--root-common-name <cn>",
      "common name of a generated root (default meshvault root CA (<trust domain>))",
    )
    .option("--root-ttl <duration>", "lifetime of a generated root (default 87600h)")
    .option(
      "--intermediate-ttl <duration>",
      "vault-sign: lifetime of the signing intermediate (default 43800h)",
    )
    .option("--key-type <alg>", "generated CA keys: ec-p256 (default), ec-p384, rsa-2048, rsa-3072, rsa-4096")
    .option(
      "--max-ttl <duration>",
      "vault-sign: role max_ttl (default config certificates.maxTtl, else 2160h)",
    )
    .option("--public-address <url>", "Vault URL written into config/urls (default the Vault address)")
    .option("--policy <name>", "policy name for the server (default meshvault-<mode without vault->)")
    .option(
      "--auth <method>",
      "how the server logs in: approle | kubernetes | jwt | none (default config vault.auth.method, else none)",
    )
    .option("--auth-mount <path>", "auth mount (default config vault.auth.mount, else the method name)")
    .option("--auth-role <name>", "auth role for the server (default config vault.auth.role, else meshvault)")
    .option("--token-ttl <duration>", "server token TTL (default 1h)")
    .option(
      "--secret-id-file <file>",
      "approle: write a new secret_id here (0600); default config vault.auth.secretIdFile",
    )
    .option(
      "--role-id-file <file>",
      "approle: also write the role_id here; default config vault.auth.roleIdFile",
    )
    .option(
      "--new-secret-id",
      "approle: issue a new secret_id even if the one in the file still works (destroys the old one)",
    )
    .option("--kubernetes-host <url>", "kubernetes: API server Vault calls for TokenReview")
    .option("--kubernetes-ca-cert <file>", "kubernetes: PEM CA of the API server")
    .option(
      "--token-reviewer-jwt-file <file>",
      "kubernetes: token Vault uses to call TokenReview (when Vault runs outside the cluster)",
    )
    .option(
      "--bound-sa-names <list>",
      "kubernetes: service account names (default config servingCertificate.serviceAccount, else meshvault)",
      collect,
    )
    .option(
      "--bound-sa-namespaces <list>",
      "kubernetes: namespaces (default config servingCertificate.namespace, else istio-system)",
      collect,
    )
    .option("--audience <aud>", "kubernetes: role audience; jwt: bound_audiences")
    .option("--jwks-url <url>", "jwt: JWKS URL")
    .option("--jwt-public-key <file>", "jwt: PEM public key for offline validation (repeatable)", collect)
    .option("--bound-issuer <iss>", "jwt: required iss")
    .option("--bound-subject <sub>", "jwt: required sub of the server's JWT")
    .option(
      "--workload-sa-namespaces <list>",
      "identity workload, kubernetes: namespaces whose workloads may log in (default *)",
      collect,
    )
    .option(
      "--workload-audience <aud>",
      "identity workload: audience of the workloads' tokens (default istio-ca)",
    )
    .option("--ca-cert <file>", "vault-kv: PEM CA certificate to store (field certificate)")
    .option("--ca-key <file>", "vault-kv: PEM CA private key to store (field privateKey)")
    .action(async (flags: SetupCliFlags) => (await import("../vault.js")).runVaultSetup(flags));

  modeOptions(
    vault
      .command("check")
      .description(
        "diagnose the configured mode: address, TLS, seal state, login, capabilities on every path the mode calls, " +
          "PKI / KV state. Prints ok or FAIL with the fix per line; exit 1 when anything fails.",
      ),
  )
    .option(
      "--auth <method>",
      "log in like the server: token | approle | kubernetes | jwt (default config vault.auth, else VAULT_AUTH_METHOD / token)",
    )
    .option("--auth-mount <path>", "auth mount")
    .option("--auth-role <name>", "kubernetes / jwt role")
    .option("--auth-token-file <file>", "kubernetes / jwt: token file; token: file holding the Vault token")
    .option("--role-id-file <file>", "approle: file holding the role_id")
    .option("--secret-id-file <file>", "approle: file holding the secret_id")
    .action(async (flags: CheckCliFlags) => (await import("../vault.js")).runVaultCheck(flags));
  return vault;
}
