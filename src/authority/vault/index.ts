// The Vault-backed authorities (seeds 000-003) and how the factory builds them.
export { VaultSignAuthority, type VaultSignAuthorityOptions, type VaultSignResponse } from "./vault-sign.js";
export {
  VaultKvAuthority,
  type VaultKvAuthorityOptions,
  type KvReloadFailure,
  type KvReloadEvent,
} from "./vault-kv.js";
export {
  VaultIntermediateAuthority,
  type VaultIntermediateAuthorityOptions,
  type IntermediateInfo,
  type RenewalEvent,
} from "./vault-intermediate.js";
export { WorkloadTokenCache, type WorkloadTokenCacheOptions } from "./workload-tokens.js";
export { toAuthorityError, readMountRoots, type VaultAuthorityLog } from "./common.js";
