export {
  DEFAULT_RESOURCE,
  DEFAULT_SDS_SOCKET,
  ROOTCA_RESOURCE,
  startSdsServer,
  type SdsServer,
  type SdsServerOptions,
  type SdsServerStats,
} from "./server.js";
export {
  createMutableSecretSource,
  type MutableSecretSource,
  type SecretSource,
  type WorkloadSecrets,
} from "./source.js";
export { PROTO_DIR, SDS_METHODS, SECRET_TYPE_URL, loadSdsProtos, type SdsProtos } from "./proto.js";
