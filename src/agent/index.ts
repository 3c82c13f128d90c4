// The workload agent's public surface.
export {
  startAgent,
  type RunningAgent,
  type StartAgentOptions,
  type AgentStatus,
  type ManagedIdentity,
} from "./agent.js";
export {
  agentConfigSchema,
  parseAgentConfig,
  identityName,
  expectedSpiffeId,
  AgentConfigError,
  DEFAULT_CA_ADDRESS,
  DEFAULT_CA_ROOT_FILE,
  DEFAULT_TOKEN_FILE,
  type AgentConfig,
  type AgentConfigInput,
  type IdentityConfig,
} from "./config.js";
export {
  createCaClient,
  CaCallError,
  type CaClient,
  type CaClientOptions,
  type CreateCertificateCall,
} from "./ca-client.js";
export {
  WorkloadIdentity,
  type WorkloadIdentityOptions,
  type IdentityStatus,
  type IssuedInfo,
} from "./workload.js";
export {
  writeCredentialFiles,
  readCredentialFiles,
  CERT_CHAIN_FILE,
  KEY_FILE,
  ROOT_CERT_FILE,
} from "./file-output.js";
export {
  renewalTime,
  backoffDelay,
  certState,
  type RotationPolicy,
  type BackoffPolicy,
  type CertState,
} from "./rotation.js";
