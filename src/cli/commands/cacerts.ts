// `meshvault cacerts`: the declaration (flags, help); Vault and Kubernetes clients load only
// when it runs (../cacerts.ts).
import type { Command } from "commander";
import { KEY_ALGORITHMS } from "../../pki/keys.js";

export interface CaCertsFlags {
  config?: string;
  source: string;
  mode?: string;
  rootMount?: string;
  intermediateMount?: string;
  ttl?: string;
  renewAt?: string;
  commonName?: string;
  keyAlgorithm?: string;
  trustDomain?: string;
  dataDir?: string;
  namespace: string;
  secretName: string;
  kubeconfig?: string;
  outDir?: string;
  tlsLayout?: boolean;
  once?: boolean;
  kvCertificate?: string;
  kvPrivateKey?: string;
  kvChain?: string;
  kvRoot?: string;
  pollInterval?: string;
  logLevel?: string;
  logFormat?: string;
}

export function registerCaCertsCommand(program: Command): void {
  program
    .command("cacerts")
    .description(
      "keep istiod's plug-in CA (ca-cert.pem, ca-key.pem, cert-chain.pem, root-cert.pem) filled with a Vault intermediate (renewed before expiry) or, with --source vault-kv, the CA pair in Vault KV (each new version): in Secret istio-system/cacerts, or with --out-dir in a directory (memory-backed emptyDir, nothing in etcd)",
    )
    .option(
      "-c, --config <file>",
      "server YAML config: its vault:, trustDomain and vault-intermediate authority settings are used",
    )
    .option(
      "--source <source>",
      "vault (an intermediate signed by Vault PKI), vault-kv (the CA pair kept in Vault KV, seed 001), or local (meshvault's embedded root, for trying it out)",
      "vault",
    )
    .option("--mode <mode>", "csr (key made here) or exported (made by Vault at <intermediate-mount>)")
    .option("--root-mount <mount>", "Vault PKI mount holding the root (default pki)")
    .option(
      "--intermediate-mount <mount>",
      "with --mode exported: mount generating the key (default pki_int)",
    )
    .option("--ttl <duration>", "intermediate lifetime (default 720h)")
    .option("--renew-at <fraction>", "renew after this fraction of the lifetime (default 0.5)")
    .option("--common-name <cn>", "intermediate's common name")
    .option("--key-algorithm <alg>", `${KEY_ALGORITHMS.join(", ")} (default ec-p256)`)
    .option("--trust-domain <domain>", "SPIFFE trust domain (default cluster.local)")
    .option("--data-dir <dir>", "with --source local: where the local root lives (default ./.meshvault)")
    .option("--namespace <ns>", "namespace of the Secret", "istio-system")
    .option("--secret-name <name>", "name of the Secret", "cacerts")
    .option("--kubeconfig <file>", "kubeconfig (default in-cluster, else KUBECONFIG / ~/.kube/config)")
    .option("--out-dir <dir>", "write the files into this directory instead of a Secret")
    .option("--tls-layout", "also write tls.crt, tls.key, ca.crt (kubernetes.io/tls names)")
    .option("--once", "one pass, then exit (Job, init container); default: keep renewing (sidecar)")
    .option(
      "--kv-certificate <ref>",
      "with --source vault-kv: the CA certificate (default vault:secret/data/pki/istiod#certificate)",
    )
    .option(
      "--kv-private-key <ref>",
      "with --source vault-kv: its key (default vault:secret/data/pki/istiod#privateKey)",
    )
    .option("--kv-chain <ref>", "with --source vault-kv: optional chain up to the root")
    .option("--kv-root <ref>", "with --source vault-kv: optional root (else the chain must end in one)")
    .option(
      "--poll-interval <duration>",
      "with --source vault-kv: how often to check for a new KV version (default 30s)",
    )
    .option("--log-level <level>", "trace, debug, info, warn, error (default info)")
    .option("--log-format <format>", "json or pretty (default: pretty on a terminal, else json)")
    .action(async (flags: CaCertsFlags) => (await import("../cacerts.js")).runCaCertsCommand(flags));
}
