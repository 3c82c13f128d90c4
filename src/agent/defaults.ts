// istio-agent's defaults, relative to the working directory. A module of their own so that
// `meshvault agent --help` prints them without loading the agent (gRPC, pino, the schemas).
export const DEFAULT_TOKEN_FILE = "./var/run/secrets/tokens/istio-token";
export const DEFAULT_CA_ROOT_FILE = "./var/run/secrets/istio/root-cert.pem";
export const DEFAULT_CA_ADDRESS = "localhost:15012";
export const DEFAULT_SDS_SOCKET = "./var/run/secrets/workload-spiffe-uds/socket";
