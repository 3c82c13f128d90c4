// Builds the configured authority. Each backend lives in its own module.
import type { AuthorityConfig } from "../config/schema.js";
import type { LeafSigner } from "./ca-material.js";
import type { Logger } from "../log/logger.js";
import type { Authority } from "./authority.js";
import { LocalAuthority } from "./local.js";
import { FilesAuthority } from "./files.js";
import type { KeyAlgorithm } from "../pki/keys.js";
import { vaultConnectionFromConfig, type VaultSection } from "../config/vault-schema.js";
import { connectVault, type ConnectedVault } from "../vault/index.js";
import { VaultIntermediateAuthority, VaultKvAuthority, VaultSignAuthority } from "./vault/index.js";

export interface AuthorityContext {
  trustDomain: string;
  dataDir: string;
  log: Logger;
  /** The config file's `vault:` section (VAULT_* / BAO_* fill what it leaves out). */
  vault?: VaultSection | undefined;
  /** Environment for VAULT_* / BAO_*; default process.env. */
  env?: Readonly<Record<string, string | undefined>>;
  /** Where backends holding a CA key sign leaves (the server's issuance workers); default in-thread. */
  leafSigner?: LeafSigner | undefined;
}

/** Client, login and token renewal for a Vault-backed authority; the authority closes it. */
function vaultFor(ctx: AuthorityContext, log: Logger): ConnectedVault {
  const vlog = log.child({ component: "vault" });
  const connection = vaultConnectionFromConfig(ctx.vault, ctx.env ?? process.env, {
    warn: (m) => vlog.warn(m),
  });
  return connectVault(connection, { logger: vlog });
}

const signerOf = (ctx: AuthorityContext): { leafSigner?: LeafSigner } =>
  ctx.leafSigner ? { leafSigner: ctx.leafSigner } : {};

/** A second instance of the configured authority under another root (a root rotation's new one). */
export interface AuthorityVariant {
  /** local: the CA directory under dataDir. */
  localDir?: string;
  /** vault-intermediate: the root mount's issuer that signs the intermediate; vault-sign: the mount's issuer that signs leaves. */
  rootIssuer?: string;
}

export function createAuthority(
  cfg: AuthorityConfig,
  ctx: AuthorityContext,
  variant: AuthorityVariant = {},
): Authority {
  const log = ctx.log.child({ component: "authority", authority: cfg.type });
  switch (cfg.type) {
    case "local":
      return new LocalAuthority({
        dataDir: ctx.dataDir,
        trustDomain: ctx.trustDomain,
        keyAlgorithm: cfg.keyAlgorithm as KeyAlgorithm,
        rootTtlSeconds: cfg.rootTtl,
        intermediateTtlSeconds: cfg.intermediateTtl,
        log,
        ...signerOf(ctx),
        ...(variant.localDir ? { dirName: variant.localDir } : {}),
      });
    case "files":
      return new FilesAuthority({
        dir: cfg.dir,
        pollIntervalMs: cfg.pollInterval * 1000,
        log,
        ...signerOf(ctx),
      });
    case "vault-sign":
      return new VaultSignAuthority({
        vault: vaultFor(ctx, log),
        mount: cfg.mount,
        role: cfg.role,
        identity: cfg.identity,
        workloadAuth: cfg.workloadAuth,
        excludeCnFromSans: cfg.excludeCnFromSans,
        log,
        issuer: variant.rootIssuer,
      });
    case "vault-kv":
      return new VaultKvAuthority({
        vault: vaultFor(ctx, log),
        certificate: cfg.certificate,
        privateKey: cfg.privateKey,
        chain: cfg.chain,
        root: cfg.root,
        pollIntervalMs: cfg.pollInterval * 1000,
        log,
        ...signerOf(ctx),
      });
    case "vault-intermediate":
      return new VaultIntermediateAuthority({
        vault: vaultFor(ctx, log),
        trustDomain: ctx.trustDomain,
        mode: cfg.mode,
        rootMount: cfg.rootMount,
        intermediateMount: cfg.intermediateMount,
        ttlSeconds: cfg.ttl,
        renewAt: cfg.renewAt,
        commonName: cfg.commonName,
        keyAlgorithm: cfg.keyAlgorithm as KeyAlgorithm,
        log,
        ...signerOf(ctx),
        rootIssuer: variant.rootIssuer,
      });
  }
}
