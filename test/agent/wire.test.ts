// The agent's hand-written protobuf codecs (src/agent/wire.ts, ca-proto.ts, sds/wire.ts) against
// the .proto files as @grpc/proto-loader/protobufjs read them: same bytes out, same fields in.
import { test } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { istioCaServiceDefinition, plainToStruct as serverPlainToStruct } from "../../src/server/proto.js";
import {
  caServiceDefinition,
  decodeCertificateResponse,
  encodeCertificateRequest,
  plainToStruct,
  type CaCertificateRequest,
} from "../../src/agent/ca-proto.js";
import {
  decodeDiscoveryRequest,
  encodeDiscoveryResponse,
  encodeSecret,
  sdsServiceDefinition,
} from "../../src/agent/sds/wire.js";
import {
  SECRET_TYPE_URL,
  loadSdsProtos,
  type DiscoveryRequest,
  type DiscoveryResponse,
  type Secret,
} from "../../src/agent/sds/proto.js";

// Deterministic pseudo-random inputs, so a failure reproduces.
let seed = 42;
const rand = (): number => {
  seed = (seed * 1103515245 + 12345) % 2 ** 31;
  return seed / 2 ** 31;
};
const ALPHABET = "abcXYZ019-_/:.= \n\u00e9\u4e2d\u{1F600}";
const randText = (max: number): string =>
  Array.from({ length: Math.floor(rand() * max) }, () => [...ALPHABET][Math.floor(rand() * 15)]).join("");
const pem = (n: number): string =>
  `-----BEGIN CERTIFICATE-----\n${randomBytes(n).toString("base64")}\n-----END CERTIFICATE-----\n`;

const ca = istioCaServiceDefinition().CreateCertificate!;

test("IstioCertificateRequest: hand-written encoder writes proto-loader's bytes", () => {
  const requests: CaCertificateRequest[] = [
    { csr: pem(600), validityDuration: 86400, metadata: plainToStruct({}) },
    { csr: pem(300), validityDuration: 3600, metadata: plainToStruct({ CertSigner: "signer-a" }) },
    {
      csr: "",
      validityDuration: 0,
      metadata: plainToStruct({ a: "x", b: 1.5, c: true, d: false, e: -3, f: 0 }),
    },
    { csr: "x", validityDuration: 90.7 },
    { csr: "x", validityDuration: -5 },
    { csr: "x", validityDuration: 2 ** 40 + 3 },
    { csr: "x", validityDuration: Number.MAX_SAFE_INTEGER },
    { csr: "x", validityDuration: 2 ** 64 },
    { csr: "x", validityDuration: -(2 ** 64) },
    { csr: "\u00e9\u4e2d\u{1F600}" },
    {},
    {
      csr: "nested",
      metadata: {
        fields: {
          n: { nullValue: "NULL_VALUE" },
          s: { structValue: { fields: { inner: { stringValue: "v" }, k: { numberValue: 2 } } } },
          l: { listValue: { values: [{ stringValue: "a" }, { boolValue: true }, { numberValue: -0.25 }] } },
          emptyList: { listValue: { values: [] } },
        },
      },
    },
  ];
  for (let i = 0; i < 50; i++)
    requests.push({
      csr: randText(400),
      validityDuration: Math.floor(rand() * 10 ** (1 + Math.floor(rand() * 12))),
      metadata: plainToStruct({ [randText(8)]: randText(20), num: rand() * 1e6 }),
    });
  for (const req of requests) {
    const ours = encodeCertificateRequest(req);
    const theirs = ca.requestSerialize(req);
    assert.deepEqual(ours, theirs, `request ${JSON.stringify(req).slice(0, 200)}`);
  }
  // The agent's plainToStruct builds what the server's builds.
  const meta = { CertSigner: "x", n: 2, b: true };
  assert.deepEqual(plainToStruct(meta), serverPlainToStruct(meta));
  assert.equal(caServiceDefinition.CreateCertificate.path, ca.path);
  assert.equal(caServiceDefinition.CreateCertificate.requestStream, ca.requestStream);
  assert.equal(caServiceDefinition.CreateCertificate.responseStream, ca.responseStream);
});

test("IstioCertificateResponse: hand-written decoder reads what proto-loader writes", () => {
  const chains = [[], [pem(700)], [pem(700), pem(500), pem(400) + pem(400)], ["", "\u4e2d"]];
  for (let i = 0; i < 20; i++)
    chains.push(Array.from({ length: Math.floor(rand() * 5) }, () => randText(300)));
  for (const certChain of chains) {
    const bytes = ca.responseSerialize({ certChain });
    assert.deepEqual(decodeCertificateResponse(bytes), ca.responseDeserialize(bytes));
    assert.deepEqual(decodeCertificateResponse(bytes).certChain, certChain);
  }
  const two = ca.responseSerialize({ certChain: [pem(50), pem(40)] });
  for (let cut = 1; cut < two.length; cut += 7) {
    let theirs: unknown;
    try {
      theirs = ca.responseDeserialize(two.subarray(0, cut));
    } catch {
      assert.throws(() => decodeCertificateResponse(two.subarray(0, cut)), `cut at ${cut}`);
      continue;
    }
    assert.deepEqual(decodeCertificateResponse(two.subarray(0, cut)), theirs, `cut at ${cut}`);
  }
});

test("Secret and DiscoveryResponse: hand-written encoders write protobufjs' bytes", () => {
  const protos = loadSdsProtos();
  const secrets: Secret[] = [
    {
      name: "default",
      tls_certificate: {
        certificate_chain: { inline_bytes: Buffer.from(pem(900) + pem(700)) },
        private_key: { inline_bytes: Buffer.from(pem(1200)) },
      },
    },
    { name: "ROOTCA", validation_context: { trusted_ca: { inline_bytes: Buffer.from(pem(800)) } } },
    { name: "", tls_certificate: { certificate_chain: { inline_bytes: Buffer.alloc(0) } } },
    { name: "x", tls_certificate: {} },
    { name: "x", validation_context: {} },
    {
      name: "files",
      tls_certificate: { certificate_chain: { filename: "/a" }, private_key: { inline_string: "k" } },
    },
    { name: "env", validation_context: { trusted_ca: { environment_variable: "ROOTS" } } },
  ];
  for (const s of secrets) assert.deepEqual(encodeSecret(s), protos.encodeSecret(s), s.name);

  const serialize = protos.service.StreamSecrets!.responseSerialize;
  const any = (s: Secret): { type_url: string; value: Buffer } => ({
    type_url: SECRET_TYPE_URL,
    value: protos.encodeSecret(s),
  });
  const responses: DiscoveryResponse[] = [
    {
      version_info: "2024-01-01T00:00:00Z/1",
      resources: secrets.slice(0, 2).map(any),
      type_url: SECRET_TYPE_URL,
      nonce: "n",
    },
    { version_info: "v", resources: [], type_url: SECRET_TYPE_URL, nonce: "" },
    {
      version_info: "",
      resources: [any(secrets[1]!)],
      type_url: "",
      nonce: "n2",
      control_plane: { identifier: "meshvault" },
    },
    {
      version_info: "v",
      resources: [{ type_url: "t", value: Buffer.alloc(0) }],
      type_url: "t",
      nonce: "n",
      control_plane: {},
    },
  ];
  for (const r of responses) {
    assert.deepEqual(encodeDiscoveryResponse(r), serialize(r), JSON.stringify(r).slice(0, 200));
    assert.deepEqual(
      sdsServiceDefinition.FetchSecrets.responseSerialize(r),
      protos.service.FetchSecrets!.responseSerialize(r),
    );
  }
  for (const m of ["StreamSecrets", "FetchSecrets", "DeltaSecrets"] as const) {
    assert.equal(sdsServiceDefinition[m].path, protos.service[m]!.path);
    assert.equal(sdsServiceDefinition[m].requestStream, protos.service[m]!.requestStream);
    assert.equal(sdsServiceDefinition[m].responseStream, protos.service[m]!.responseStream);
  }
});

test("DiscoveryRequest: hand-written decoder reads the fields the server uses as proto-loader does", () => {
  const protos = loadSdsProtos();
  const deserialize = protos.service.StreamSecrets!.requestDeserialize as (b: Buffer) => DiscoveryRequest;
  const requests: DiscoveryRequest[] = [
    {},
    {
      resource_names: ["default"],
      type_url: SECRET_TYPE_URL,
      node: { id: "sidecar~10.0.0.1~pod.ns~ns.svc.cluster.local" },
    },
    {
      version_info: "v/1",
      response_nonce: "abc",
      resource_names: ["default", "ROOTCA", "default"],
      type_url: SECRET_TYPE_URL,
    },
    { version_info: "v/1", response_nonce: "abc", error_detail: {} },
    { version_info: "v/2", response_nonce: "abc", error_detail: { code: 13, message: "bad key" } },
    { error_detail: { code: -1, message: "" } },
    // Fields the server's types leave out (and the decoder skips) must not disturb the rest.
    {
      node: {
        id: "n",
        cluster: "c",
        metadata: { fields: { ISTIO_VERSION: { stringValue: "1.22" } } },
        user_agent_name: "envoy",
        user_agent_version: "1.30",
      },
      error_detail: { code: 3, message: "m", details: [{ type_url: "x", value: Buffer.from([1, 2]) }] },
    } as DiscoveryRequest,
    { node: {} },
  ];
  for (let i = 0; i < 30; i++)
    requests.push({
      version_info: randText(20),
      resource_names: Array.from({ length: Math.floor(rand() * 4) }, () => randText(10)),
      type_url: randText(40),
      response_nonce: randText(36),
      node: { id: randText(30) },
    });
  const view = (r: DiscoveryRequest): unknown => ({
    version_info: r.version_info,
    node: r.node && { id: r.node.id, cluster: r.node.cluster },
    resource_names: r.resource_names,
    type_url: r.type_url,
    response_nonce: r.response_nonce,
    error_detail: r.error_detail && { code: r.error_detail.code, message: r.error_detail.message },
  });
  for (const req of requests) {
    const bytes = protos.encodeDiscoveryRequest(req);
    assert.deepEqual(view(decodeDiscoveryRequest(bytes)), view(deserialize(bytes)), JSON.stringify(req));
  }
  const full = protos.encodeDiscoveryRequest(requests[1]!);
  // Malformed input fails (or, for a string cut at the very end, is read short) the same way.
  for (let cut = 1; cut < full.length; cut++) {
    let theirs: unknown;
    try {
      theirs = view(deserialize(full.subarray(0, cut)));
    } catch {
      assert.throws(() => decodeDiscoveryRequest(full.subarray(0, cut)), `cut at ${cut}`);
      continue;
    }
    assert.deepEqual(view(decodeDiscoveryRequest(full.subarray(0, cut))), theirs, `cut at ${cut}`);
  }
});
