// Builds the configured authority. Each backend lives in its own module.
import type { AuthorityConfig } from "../config/schema.js";
import type { Logger } from "../log/logger.js";
import type { Authority } from "./authority.js";
import { LocalAuthority } from "./local.js";
import { FilesAuthority } from "./files.js";
import type { KeyAlgorithm } from "../pki/keys.js";

export interface AuthorityContext {
  trustDomain: string;
  dataDir: string;
  log: Logger;
}

export function createAuthority(cfg: AuthorityConfig, ctx: AuthorityContext): Authority {
  const log = ctx.log.child({ authority: cfg.type });
  switch (cfg.type) {
    case "local":
      return new LocalAuthority({
        dataDir: ctx.dataDir,
        trustDomain: ctx.trustDomain,
        keyAlgorithm: cfg.keyAlgorithm as KeyAlgorithm,
        rootTtlSeconds: cfg.rootTtl,
        intermediateTtlSeconds: cfg.intermediateTtl,
        log: { info: (m) => log.info(m), warn: (m) => log.warn(m) },
      });
    case "files":
      return new FilesAuthority({
        dir: cfg.dir,
        pollIntervalMs: cfg.pollInterval * 1000,
        log: {
          info: (m: string) => log.info(m),
          warn: (m: string) => log.warn(m),
          error: (m: string) => log.error(m),
        },
      });
    case "vault-sign":
    case "vault-kv":
    case "vault-intermediate":
      throw new Error(`authority ${cfg.type} is not wired yet`);
  }
}
