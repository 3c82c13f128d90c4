// Loads meshvault's Istio CA proto (proto/istio/v1/auth/ca.proto) for grpc-js.
import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";

/** Repo-root `proto/`: three levels up from src/server/x.ts and from dist/server/x.js. */
export const PROTO_ROOT = fileURLToPath(new URL("../../proto/", import.meta.url));

export interface WireCertificateRequest {
  csr: string;
  validityDuration: number;
  metadata?: { fields?: Record<string, WireValue> } | null;
}
export interface WireValue {
  nullValue?: unknown;
  numberValue?: number;
  stringValue?: string;
  boolValue?: boolean;
  structValue?: { fields?: Record<string, WireValue> };
  listValue?: { values?: WireValue[] };
}
export interface WireCertificateResponse {
  certChain: string[];
}

let cached: grpc.ServiceDefinition | undefined;

export function istioCaServiceDefinition(): grpc.ServiceDefinition {
  if (cached) return cached;
  const def = protoLoader.loadSync("istio/v1/auth/ca.proto", {
    includeDirs: [PROTO_ROOT],
    keepCase: false,
    longs: Number,
    defaults: true,
    oneofs: true,
  });
  const pkg = grpc.loadPackageDefinition(def) as unknown as {
    istio: { v1: { auth: { IstioCertificateService: grpc.ServiceClientConstructor } } };
  };
  cached = pkg.istio.v1.auth.IstioCertificateService.service;
  return cached;
}

export function istioCaClientConstructor(): grpc.ServiceClientConstructor {
  istioCaServiceDefinition();
  return grpc.makeGenericClientConstructor(cached!, "IstioCertificateService");
}

/** google.protobuf.Struct (as proto-loader decodes it) to a plain object. */
export function structToPlain(
  s: { fields?: Record<string, WireValue> } | null | undefined,
): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(s?.fields ?? {})) out[k] = valueToPlain(v);
  return out;
}

function valueToPlain(v: WireValue): unknown {
  if (v.stringValue !== undefined && v.stringValue !== null) return v.stringValue;
  if (v.numberValue !== undefined && v.numberValue !== null) return v.numberValue;
  if (v.boolValue !== undefined && v.boolValue !== null) return v.boolValue;
  if (v.structValue) return structToPlain(v.structValue);
  if (v.listValue) return (v.listValue.values ?? []).map(valueToPlain);
  return null;
}

/** Plain object to Struct, for our own client. */
export function plainToStruct(o: Record<string, string | number | boolean>): {
  fields: Record<string, WireValue>;
} {
  const fields: Record<string, WireValue> = {};
  for (const [k, v] of Object.entries(o)) {
    if (typeof v === "string") fields[k] = { stringValue: v };
    else if (typeof v === "number") fields[k] = { numberValue: v };
    else fields[k] = { boolValue: v };
  }
  return { fields };
}
