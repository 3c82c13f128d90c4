// The SDS server's service definition with hand-written codecs for the messages it receives
// (DiscoveryRequest) and sends (DiscoveryResponse, and the Secret inside its Any), so that a
// sidecar does not load protobufjs and parse proto/envoy/** at start (src/agent/wire.ts says
// why). proto.ts keeps the proto-loader path for SDS clients (the tunnel, tests), and
// test/agent/wire.test.ts checks both produce the same bytes and the same decoded fields.
import type * as grpc from "@grpc/grpc-js";
import { ProtoReader, ProtoWriter } from "../wire.js";
import {
  SDS_METHODS,
  type AnyMessage,
  type DataSource,
  type DiscoveryRequest,
  type DiscoveryResponse,
  type EnvoyNode,
  type RpcStatus,
  type Secret,
} from "./proto.js";

const isSet = <T>(v: T | null | undefined): v is T => v !== undefined && v !== null;

function writeDataSource(d: DataSource): ProtoWriter {
  // envoy.config.core.v3.DataSource: oneof specifier { filename = 1; inline_bytes = 2;
  // inline_string = 3; environment_variable = 4 }.
  const w = new ProtoWriter();
  if (isSet(d.filename)) w.string(1, d.filename);
  if (isSet(d.inline_bytes)) w.bytes(2, d.inline_bytes);
  if (isSet(d.inline_string)) w.string(3, d.inline_string);
  if (isSet(d.environment_variable)) w.string(4, d.environment_variable);
  return w;
}

/** envoy.extensions.transport_sockets.tls.v3.Secret, as protobufjs `encode(fromObject(secret))`. */
export function encodeSecret(secret: Secret): Buffer {
  const w = new ProtoWriter();
  if (isSet(secret.name)) w.string(1, secret.name);
  const tls = secret.tls_certificate;
  if (isSet(tls)) {
    // TlsCertificate { certificate_chain = 1; private_key = 2 }
    const t = new ProtoWriter();
    if (isSet(tls.certificate_chain)) t.message(1, writeDataSource(tls.certificate_chain));
    if (isSet(tls.private_key)) t.message(2, writeDataSource(tls.private_key));
    w.message(2, t);
  }
  const vc = secret.validation_context;
  if (isSet(vc)) {
    // CertificateValidationContext { trusted_ca = 1 }
    const v = new ProtoWriter();
    if (isSet(vc.trusted_ca)) v.message(1, writeDataSource(vc.trusted_ca));
    w.message(4, v);
  }
  return w.finish();
}

function writeAny(a: AnyMessage): ProtoWriter {
  const w = new ProtoWriter();
  if (isSet(a.type_url)) w.string(1, a.type_url);
  if (isSet(a.value)) w.bytes(2, a.value);
  return w;
}

/** envoy.service.discovery.v3.DiscoveryResponse, as proto-loader's serializer writes it. */
export function encodeDiscoveryResponse(res: DiscoveryResponse): Buffer {
  const w = new ProtoWriter();
  if (isSet(res.version_info)) w.string(1, res.version_info);
  if (isSet(res.resources)) for (const a of res.resources) w.message(2, writeAny(a));
  if (isSet(res.type_url)) w.string(4, res.type_url);
  if (isSet(res.nonce)) w.string(5, res.nonce);
  if (isSet(res.control_plane)) {
    const cp = new ProtoWriter();
    if (isSet(res.control_plane.identifier)) cp.string(1, res.control_plane.identifier);
    w.message(6, cp);
  }
  return w.finish();
}

function readNode(r: ProtoReader): EnvoyNode {
  const node: EnvoyNode = {};
  while (!r.done()) {
    const [field, wire] = r.tag();
    if (field === 1 && wire === 2) node.id = r.string();
    else if (field === 2 && wire === 2) node.cluster = r.string();
    else r.skip(wire, field); // metadata, user agent: never read by the server
  }
  return node;
}

function readStatus(r: ProtoReader): RpcStatus {
  const s: RpcStatus = {};
  while (!r.done()) {
    const [field, wire] = r.tag();
    if (field === 1 && wire === 0) s.code = r.int32();
    else if (field === 2 && wire === 2) s.message = r.string();
    else r.skip(wire, field); // details: never read by the server
  }
  return s;
}

/**
 * envoy.service.discovery.v3.DiscoveryRequest with the fields the server reads, shaped like
 * proto-loader's decoding (keepCase, defaults false, arrays true): absent fields are undefined,
 * resource_names is always an array, and error_detail is an object whenever it is on the wire
 * (even empty: that is still a NACK).
 */
export function decodeDiscoveryRequest(bytes: Uint8Array): DiscoveryRequest {
  const r = new ProtoReader(bytes);
  const req: DiscoveryRequest = { resource_names: [] };
  while (!r.done()) {
    const [field, wire] = r.tag();
    if (wire !== 2 || field > 6) {
      r.skip(wire, field);
      continue;
    }
    switch (field) {
      case 1:
        req.version_info = r.string();
        break;
      case 2:
        req.node = readNode(r.sub());
        break;
      case 3:
        req.resource_names!.push(r.string());
        break;
      case 4:
        req.type_url = r.string();
        break;
      case 5:
        req.response_nonce = r.string();
        break;
      case 6:
        req.error_detail = readStatus(r.sub());
        break;
    }
  }
  return req;
}

/** DeltaSecrets is answered UNIMPLEMENTED before any message is read; still reject malformed bytes. */
function decodeIgnored(bytes: Uint8Array): Record<string, never> {
  const r = new ProtoReader(bytes);
  while (!r.done()) {
    const [field, wire] = r.tag();
    r.skip(wire, field);
  }
  return {};
}

const serverOnly = (): never => {
  throw new Error("this definition serves SDS; use loadSdsProtos() for a client");
};

/** envoy.service.secret.v3.SecretDiscoveryService for `grpc.Server.addService`. */
export const sdsServiceDefinition = {
  DeltaSecrets: {
    path: SDS_METHODS.delta,
    requestStream: true,
    responseStream: true,
    requestSerialize: serverOnly,
    requestDeserialize: decodeIgnored,
    responseSerialize: (): Buffer => Buffer.alloc(0),
    responseDeserialize: serverOnly,
    originalName: "deltaSecrets",
  },
  StreamSecrets: {
    path: SDS_METHODS.stream,
    requestStream: true,
    responseStream: true,
    requestSerialize: serverOnly,
    requestDeserialize: decodeDiscoveryRequest,
    responseSerialize: encodeDiscoveryResponse,
    responseDeserialize: serverOnly,
    originalName: "streamSecrets",
  },
  FetchSecrets: {
    path: SDS_METHODS.fetch,
    requestStream: false,
    responseStream: false,
    requestSerialize: serverOnly,
    requestDeserialize: decodeDiscoveryRequest,
    responseSerialize: encodeDiscoveryResponse,
    responseDeserialize: serverOnly,
    originalName: "fetchSecrets",
  },
} satisfies grpc.ServiceDefinition;
