// istio.v1.auth.IstioCertificateService (proto/istio/v1/auth/ca.proto) for the agent's client,
// with hand-written codecs (src/agent/wire.ts says why). The server keeps proto-loader
// (src/server/proto.ts); test/agent/wire.test.ts checks that both encode the same bytes.
import type * as grpc from "@grpc/grpc-js";
import { ProtoReader, ProtoWriter } from "./wire.js";

export const CA_CREATE_CERTIFICATE_PATH = "/istio.v1.auth.IstioCertificateService/CreateCertificate";

/** google.protobuf.Value as proto-loader (keepCase false) represents it. */
export interface CaWireValue {
  nullValue?: 0 | "NULL_VALUE" | null;
  numberValue?: number | null;
  stringValue?: string | null;
  boolValue?: boolean | null;
  structValue?: CaWireStruct | null;
  listValue?: { values?: CaWireValue[] | null } | null;
}

export interface CaWireStruct {
  fields?: Record<string, CaWireValue> | null;
}

/** IstioCertificateRequest, camelCase like proto-loader's `keepCase: false`. */
export interface CaCertificateRequest {
  csr?: string | null;
  /** Seconds (int64). */
  validityDuration?: number | null;
  metadata?: CaWireStruct | null;
}

export interface CaCertificateResponse {
  certChain: string[];
}

const isSet = <T>(v: T | null | undefined): v is T => v !== undefined && v !== null;

function writeValue(v: CaWireValue): ProtoWriter {
  const w = new ProtoWriter();
  // Field order as in struct.proto: null_value=1, number_value=2, string_value=3, bool_value=4,
  // struct_value=5, list_value=6.
  if (isSet(v.nullValue)) w.int64(1, 0);
  if (isSet(v.numberValue)) w.double(2, v.numberValue);
  if (isSet(v.stringValue)) w.string(3, v.stringValue);
  if (isSet(v.boolValue)) w.bool(4, v.boolValue);
  if (isSet(v.structValue)) w.message(5, writeStruct(v.structValue));
  if (isSet(v.listValue)) {
    const l = new ProtoWriter();
    for (const item of v.listValue.values ?? []) l.message(1, writeValue(item));
    w.message(6, l);
  }
  return w;
}

function writeStruct(s: CaWireStruct): ProtoWriter {
  const w = new ProtoWriter();
  // map<string, Value> fields = 1: one entry message { key = 1; value = 2 } per key.
  for (const [k, v] of Object.entries(s.fields ?? {}))
    w.message(1, new ProtoWriter().string(1, k).message(2, writeValue(v)));
  return w;
}

export function encodeCertificateRequest(req: CaCertificateRequest): Buffer {
  const w = new ProtoWriter();
  if (isSet(req.csr)) w.string(1, req.csr);
  // Field 2 is reserved in ca.proto.
  if (isSet(req.validityDuration)) w.int64(3, req.validityDuration);
  if (isSet(req.metadata)) w.message(4, writeStruct(req.metadata));
  return w.finish();
}

export function decodeCertificateResponse(bytes: Uint8Array): CaCertificateResponse {
  const r = new ProtoReader(bytes);
  const certChain: string[] = [];
  while (!r.done()) {
    const [field, wire] = r.tag();
    if (field === 1 && wire === 2) certChain.push(r.string());
    else r.skip(wire, field);
  }
  return { certChain };
}

/** The client half of the service definition, for grpc.makeGenericClientConstructor. */
export const caServiceDefinition = {
  CreateCertificate: {
    path: CA_CREATE_CERTIFICATE_PATH,
    requestStream: false,
    responseStream: false,
    requestSerialize: encodeCertificateRequest,
    requestDeserialize: (): CaCertificateRequest => {
      throw new Error("the agent only calls CreateCertificate; it does not serve it");
    },
    responseSerialize: (): Buffer => {
      throw new Error("the agent only calls CreateCertificate; it does not serve it");
    },
    responseDeserialize: decodeCertificateResponse,
    originalName: "createCertificate",
  },
} satisfies grpc.ServiceDefinition;

/** Plain metadata to the Struct shape above (what src/server/proto.ts's plainToStruct builds). */
export function plainToStruct(o: Record<string, string | number | boolean>): {
  fields: Record<string, CaWireValue>;
} {
  const fields: Record<string, CaWireValue> = {};
  for (const [k, v] of Object.entries(o)) {
    if (typeof v === "string") fields[k] = { stringValue: v };
    else if (typeof v === "number") fields[k] = { numberValue: v };
    else fields[k] = { boolValue: v };
  }
  return { fields };
}
