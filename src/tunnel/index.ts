// `meshvault tunnel` as a library.
export {
  startTunnelServer,
  type TunnelServerOptions,
  type RunningTunnel,
  type TunnelStats,
} from "./server.js";
export { startTunnelClient, type TunnelClientOptions } from "./client.js";
export {
  fileCredentialSource,
  sdsCredentialSource,
  staticCredentialSource,
  type CredentialSource,
  type TlsCredentials,
} from "./credentials.js";
export { peerSpiffeId, isAllowed, validatePatterns, PeerIdentityError } from "./authz.js";
export type { TlsVersion } from "./tls-context.js";
