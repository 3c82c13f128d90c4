// Loads our minimal Envoy SDS protos (proto/envoy/**, proto/google/rpc/**) and
// exposes them through small typed interfaces. @grpc/proto-loader gives the
// gRPC service definition; protobufjs (proto-loader's own engine) encodes the
// Secret resources that travel inside google.protobuf.Any.
//
// This is the path for SDS clients (the tunnel, tests) and the reference the
// agent's hand-written codecs (wire.ts) are tested against. The SDS server does
// not use it: proto-loader and protobufjs are required on the first
// loadSdsProtos() call, not when this module is imported, so that a sidecar
// importing the agent never loads them (~5 MB RSS, bench/agents.ts).
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
import path from "node:path";
import type * as grpc from "@grpc/grpc-js";
import type * as ProtoLoader from "@grpc/proto-loader";
import type * as Protobuf from "protobufjs";

const require = createRequire(import.meta.url);

/** `type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret` */
export const SECRET_TYPE_URL = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";

/** Full gRPC method paths of envoy.service.secret.v3.SecretDiscoveryService. */
export const SDS_METHODS = {
  stream: "/envoy.service.secret.v3.SecretDiscoveryService/StreamSecrets",
  fetch: "/envoy.service.secret.v3.SecretDiscoveryService/FetchSecrets",
  delta: "/envoy.service.secret.v3.SecretDiscoveryService/DeltaSecrets",
} as const;

// src/agent/sds/proto.ts and dist/agent/sds/proto.js are both three levels below the package root.
export const PROTO_DIR = fileURLToPath(new URL("../../../proto/", import.meta.url));

const SDS_PROTO = "envoy/service/secret/v3/sds.proto";
const SECRET_PROTO = "envoy/extensions/transport_sockets/tls/v3/secret.proto";

// ---- Typed views of the messages (snake_case, as loaded with keepCase). ----

export interface RpcStatus {
  code?: number;
  message?: string;
}

export interface EnvoyNode {
  id?: string;
  cluster?: string;
}

export interface DiscoveryRequest {
  version_info?: string;
  node?: EnvoyNode;
  resource_names?: string[];
  type_url?: string;
  response_nonce?: string;
  error_detail?: RpcStatus;
}

export interface AnyMessage {
  type_url: string;
  value: Uint8Array;
}

export interface DiscoveryResponse {
  version_info: string;
  resources: AnyMessage[];
  type_url: string;
  nonce: string;
  control_plane?: { identifier?: string };
}

/** envoy.config.core.v3.DataSource; we only ever emit inline_bytes. */
export interface DataSource {
  filename?: string;
  inline_bytes?: Uint8Array;
  inline_string?: string;
  environment_variable?: string;
}

export interface Secret {
  name: string;
  tls_certificate?: { certificate_chain?: DataSource; private_key?: DataSource };
  validation_context?: { trusted_ca?: DataSource };
}

export interface SdsProtos {
  /** SecretDiscoveryService, ready for `server.addService` / `makeGenericClientFromService`. */
  service: grpc.ServiceDefinition;
  encodeSecret(secret: Secret): Buffer;
  decodeSecret(bytes: Uint8Array): Secret;
  /** Encoders for the transport messages, for raw clients and tests. */
  encodeDiscoveryRequest(req: DiscoveryRequest): Buffer;
  decodeDiscoveryResponse(bytes: Uint8Array): DiscoveryResponse;
}

const LOADER_OPTIONS: ProtoLoader.Options = {
  includeDirs: [PROTO_DIR],
  keepCase: true,
  longs: String,
  enums: String,
  defaults: false,
  arrays: true,
  oneofs: true,
};

let cached: SdsProtos | undefined;

/** Parses the protos once per process. Throws if the proto directory is missing. */
export function loadSdsProtos(): SdsProtos {
  if (cached) return cached;
  const protoLoader = require("@grpc/proto-loader") as typeof ProtoLoader;
  const protobuf = require("protobufjs") as typeof Protobuf;

  const def = protoLoader.loadSync([SDS_PROTO], LOADER_OPTIONS);
  const svc = def["envoy.service.secret.v3.SecretDiscoveryService"];
  if (!svc || "format" in svc) {
    throw new Error(`SecretDiscoveryService not found in ${path.join(PROTO_DIR, SDS_PROTO)}`);
  }
  // proto-loader's ServiceDefinition is structurally grpc-js's.
  const service = svc as unknown as grpc.ServiceDefinition;

  const root = new protobuf.Root();
  // google/protobuf/* are bundled with protobufjs; everything else is ours.
  root.resolvePath = (_origin: string, target: string): string =>
    target.startsWith("google/protobuf/") ? target : path.join(PROTO_DIR, target);
  root.loadSync([SECRET_PROTO, SDS_PROTO], { keepCase: true });
  root.resolveAll();
  const secretType = root.lookupType("envoy.extensions.transport_sockets.tls.v3.Secret");
  const requestType = root.lookupType("envoy.service.discovery.v3.DiscoveryRequest");
  const responseType = root.lookupType("envoy.service.discovery.v3.DiscoveryResponse");
  const toObjectOptions: Protobuf.IConversionOptions = {
    longs: String,
    enums: String,
    bytes: Buffer,
    arrays: true,
    oneofs: false,
  };

  cached = {
    service,
    encodeSecret: (secret) => Buffer.from(secretType.encode(secretType.fromObject(secret)).finish()),
    decodeSecret: (bytes) => secretType.toObject(secretType.decode(bytes), toObjectOptions) as Secret,
    encodeDiscoveryRequest: (req) => Buffer.from(requestType.encode(requestType.fromObject(req)).finish()),
    decodeDiscoveryResponse: (bytes) => {
      const obj = responseType.toObject(responseType.decode(bytes), { ...toObjectOptions, defaults: true });
      return obj as DiscoveryResponse;
    },
  };
  return cached;
}
