// A real @grpc/grpc-js SDS client for tests, plus an openssl-made test PKI.
//
// The client does NOT use our .proto files: it encodes DiscoveryRequest and decodes
// DiscoveryResponse / Secret with a hand-written protobuf wire codec whose field
// numbers are typed in from Envoy's published API (envoy/service/discovery/v3/
// discovery.proto, envoy/extensions/transport_sockets/tls/v3/{secret,common}.proto,
// envoy/config/core/v3/base.proto, google/rpc/status.proto). A wrong field number in
// proto/** therefore fails the tests instead of cancelling out.
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as grpc from "@grpc/grpc-js";

export const SECRET_TYPE_URL = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";
const SERVICE = "/envoy.service.secret.v3.SecretDiscoveryService";
const ADS = "/envoy.service.discovery.v3.AggregatedDiscoveryService";

// ---------------------------------------------------------------- wire codec

class Writer {
  private parts: Buffer[] = [];
  private varint(n: number): void {
    const bytes: number[] = [];
    let v = n;
    while (v >= 0x80) {
      bytes.push((v % 0x80) | 0x80);
      v = Math.floor(v / 0x80);
    }
    bytes.push(v);
    this.parts.push(Buffer.from(bytes));
  }
  private tag(field: number, wireType: number): void {
    this.varint(field * 8 + wireType);
  }
  uint(field: number, n: number): this {
    this.tag(field, 0);
    this.varint(n);
    return this;
  }
  bytes(field: number, b: Uint8Array): this {
    this.tag(field, 2);
    this.varint(b.length);
    this.parts.push(Buffer.from(b));
    return this;
  }
  string(field: number, s: string): this {
    return this.bytes(field, Buffer.from(s, "utf8"));
  }
  finish(): Buffer {
    return Buffer.concat(this.parts);
  }
}

type WireValue = { wireType: 0; n: number } | { wireType: 2; bytes: Buffer } | { wireType: 1 | 5 };

/** Decodes one message level into field number -> values (in order). */
export function decodeFields(buf: Buffer): Map<number, WireValue[]> {
  const out = new Map<number, WireValue[]>();
  let i = 0;
  const varint = (): number => {
    let result = 0;
    let mul = 1;
    for (;;) {
      const b = buf[i++];
      if (b === undefined) throw new Error("truncated varint");
      result += (b & 0x7f) * mul;
      if (b < 0x80) return result;
      mul *= 0x80;
    }
  };
  while (i < buf.length) {
    const key = varint();
    const field = Math.floor(key / 8);
    const wt = key % 8;
    let v: WireValue;
    if (wt === 0) v = { wireType: 0, n: varint() };
    else if (wt === 2) {
      const len = varint();
      v = { wireType: 2, bytes: buf.subarray(i, i + len) };
      i += len;
    } else if (wt === 1) {
      i += 8;
      v = { wireType: 1 };
    } else if (wt === 5) {
      i += 4;
      v = { wireType: 5 };
    } else throw new Error(`unsupported wire type ${wt}`);
    const list = out.get(field) ?? [];
    list.push(v);
    out.set(field, list);
  }
  return out;
}

function lenDelim(fields: Map<number, WireValue[]>, field: number): Buffer[] {
  return (fields.get(field) ?? []).map((v) => {
    if (v.wireType !== 2)
      throw new Error(`field ${field}: expected length-delimited, got wire type ${v.wireType}`);
    return v.bytes;
  });
}
function str(fields: Map<number, WireValue[]>, field: number): string {
  return lenDelim(fields, field).at(-1)?.toString("utf8") ?? "";
}

export interface DiscoveryRequestInit {
  versionInfo?: string;
  /** metadata: string values only (google.protobuf.Struct), e.g. NAMESPACE, SERVICE_ACCOUNT. */
  node?: { id: string; cluster?: string; metadata?: Record<string, string> };
  resourceNames?: string[];
  typeUrl?: string;
  responseNonce?: string;
  errorDetail?: { code: number; message: string };
}

/** envoy.service.discovery.v3.DiscoveryRequest */
export function encodeDiscoveryRequest(r: DiscoveryRequestInit): Buffer {
  const w = new Writer();
  if (r.versionInfo) w.string(1, r.versionInfo);
  if (r.node) {
    const n = new Writer().string(1, r.node.id);
    if (r.node.cluster) n.string(2, r.node.cluster);
    // Node.metadata = 3: Struct.fields = 1 (map entry: key 1, value 2), Value.string_value = 3.
    const fields = Object.entries(r.node.metadata ?? {});
    if (fields.length) {
      const struct = new Writer();
      for (const [k, v] of fields)
        struct.bytes(1, new Writer().string(1, k).bytes(2, new Writer().string(3, v).finish()).finish());
      n.bytes(3, struct.finish());
    }
    w.bytes(2, n.finish());
  }
  for (const name of r.resourceNames ?? []) w.string(3, name);
  w.string(4, r.typeUrl ?? SECRET_TYPE_URL);
  if (r.responseNonce) w.string(5, r.responseNonce);
  if (r.errorDetail)
    w.bytes(6, new Writer().uint(1, r.errorDetail.code).string(2, r.errorDetail.message).finish());
  return w.finish();
}

export interface WireAny {
  typeUrl: string;
  value: Buffer;
}
export interface WireDiscoveryResponse {
  versionInfo: string;
  resources: WireAny[];
  typeUrl: string;
  nonce: string;
}

/** envoy.service.discovery.v3.DiscoveryResponse */
export function decodeDiscoveryResponse(buf: Buffer): WireDiscoveryResponse {
  const f = decodeFields(buf);
  return {
    versionInfo: str(f, 1),
    resources: lenDelim(f, 2).map((b) => {
      const a = decodeFields(b);
      return { typeUrl: str(a, 1), value: Buffer.from(lenDelim(a, 2).at(-1) ?? Buffer.alloc(0)) };
    }),
    typeUrl: str(f, 4),
    nonce: str(f, 5),
  };
}

export interface WireSecret {
  name: string;
  certificateChain?: string;
  privateKey?: string;
  trustedCa?: string;
  /** Field numbers present at the Secret level, to assert nothing unexpected is set. */
  fields: number[];
}

/** envoy.config.core.v3.DataSource: we expect inline_bytes (2) and nothing else. */
function dataSourceInlineBytes(buf: Buffer | undefined): string | undefined {
  if (!buf) return undefined;
  const f = decodeFields(buf);
  const other = [...f.keys()].filter((k) => k !== 2);
  if (other.length > 0)
    throw new Error(`DataSource has fields ${other.join(",")}, expected only inline_bytes (2)`);
  return lenDelim(f, 2).at(-1)?.toString("utf8");
}

/** envoy.extensions.transport_sockets.tls.v3.Secret */
export function decodeSecret(buf: Buffer): WireSecret {
  const f = decodeFields(buf);
  const out: WireSecret = { name: str(f, 1), fields: [...f.keys()].sort() };
  const tlsCert = lenDelim(f, 2).at(-1); // tls_certificate = 2
  if (tlsCert) {
    const t = decodeFields(tlsCert);
    out.certificateChain = dataSourceInlineBytes(lenDelim(t, 1).at(-1)); // certificate_chain = 1
    out.privateKey = dataSourceInlineBytes(lenDelim(t, 2).at(-1)); // private_key = 2
  }
  const validation = lenDelim(f, 4).at(-1); // validation_context = 4
  if (validation) {
    out.trustedCa = dataSourceInlineBytes(lenDelim(decodeFields(validation), 1).at(-1)); // trusted_ca = 1
  }
  return out;
}

export function secretsByName(resp: WireDiscoveryResponse): Map<string, WireSecret> {
  const m = new Map<string, WireSecret>();
  for (const r of resp.resources) {
    if (r.typeUrl !== SECRET_TYPE_URL) throw new Error(`resource type_url ${r.typeUrl}`);
    const s = decodeSecret(r.value);
    m.set(s.name, s);
  }
  return m;
}

// ---------------------------------------------------------------- client

const identity = (b: Buffer): Buffer => b;

export class SdsStream {
  private queue: WireDiscoveryResponse[] = [];
  private waiter: ((r: WireDiscoveryResponse | Error) => void) | undefined;
  private failure: Error | undefined;
  /** Resolves with the final status of the call. */
  readonly status: Promise<grpc.StatusObject>;

  constructor(private readonly call: grpc.ClientDuplexStream<Buffer, Buffer>) {
    call.on("data", (buf: Buffer) => {
      const resp = decodeDiscoveryResponse(buf);
      if (this.waiter) {
        const w = this.waiter;
        this.waiter = undefined;
        w(resp);
      } else this.queue.push(resp);
    });
    call.on("error", (err: Error) => {
      this.failure = err;
      this.waiter?.(err);
      this.waiter = undefined;
    });
    this.status = new Promise((resolve) => call.on("status", resolve));
  }

  send(r: DiscoveryRequestInit): void {
    this.call.write(encodeDiscoveryRequest(r));
  }

  /** The next response, or rejects after `timeoutMs`. */
  next(timeoutMs = 3000): Promise<WireDiscoveryResponse> {
    const queued = this.queue.shift();
    if (queued) return Promise.resolve(queued);
    if (this.failure) return Promise.reject(this.failure);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiter = undefined;
        reject(new Error(`no SDS response within ${timeoutMs} ms`));
      }, timeoutMs);
      this.waiter = (r) => {
        clearTimeout(timer);
        if (r instanceof Error) reject(r);
        else resolve(r);
      };
    });
  }

  /** Fails if any response arrives within `ms`. */
  async expectNone(ms: number): Promise<void> {
    await new Promise((r) => setTimeout(r, ms));
    const got = this.queue.shift();
    if (got)
      throw new Error(
        `unexpected SDS response (version ${got.versionInfo}, ${got.resources.length} resources)`,
      );
  }

  /** What Envoy sends after applying `resp`. */
  ack(resp: WireDiscoveryResponse, resourceNames: string[]): void {
    this.send({ versionInfo: resp.versionInfo, resourceNames, responseNonce: resp.nonce });
  }

  /** What Envoy sends after rejecting `resp`: the previous good version, the nonce, and error_detail. */
  nack(resp: WireDiscoveryResponse, resourceNames: string[], message: string, previousVersion = ""): void {
    this.send({
      versionInfo: previousVersion,
      resourceNames,
      responseNonce: resp.nonce,
      errorDetail: { code: 13, message },
    });
  }

  end(): void {
    this.call.end();
  }
  cancel(): void {
    this.call.cancel();
  }
}

export class SdsTestClient {
  private readonly client: grpc.Client;
  constructor(address: string) {
    this.client = new grpc.Client(address, grpc.credentials.createInsecure());
  }

  streamSecrets(): SdsStream {
    return new SdsStream(this.client.makeBidiStreamRequest(`${SERVICE}/StreamSecrets`, identity, identity));
  }

  /** ADS (what Envoy opens on pilot-agent's XDS socket): same messages, any type_url. */
  streamAggregatedResources(): SdsStream {
    return new SdsStream(
      this.client.makeBidiStreamRequest(`${ADS}/StreamAggregatedResources`, identity, identity),
    );
  }

  fetchSecrets(r: DiscoveryRequestInit): Promise<WireDiscoveryResponse> {
    return new Promise((resolve, reject) => {
      this.client.makeUnaryRequest(
        `${SERVICE}/FetchSecrets`,
        identity,
        identity,
        encodeDiscoveryRequest(r),
        (err, buf) => {
          if (err) reject(err);
          else if (!buf) reject(new Error("empty FetchSecrets response"));
          else resolve(decodeDiscoveryResponse(buf));
        },
      );
    });
  }

  /** Opens DeltaSecrets, sends one request, resolves with the call's final status. */
  deltaSecrets(): Promise<grpc.StatusObject> {
    const call = this.client.makeBidiStreamRequest(`${SERVICE}/DeltaSecrets`, identity, identity);
    call.on("error", () => {});
    call.on("data", () => {});
    const status = new Promise<grpc.StatusObject>((resolve) => call.on("status", resolve));
    call.write(new Writer().string(2, SECRET_TYPE_URL).string(3, "default").finish());
    return status;
  }

  close(): void {
    this.client.close();
  }
}

// ---------------------------------------------------------------- test PKI

export interface TestIdentity {
  /** Leaf + intermediate. */
  certChainPem: string;
  privateKeyPem: string;
  leafPem: string;
}
export interface TestPki {
  rootPem: string;
  intermediatePem: string;
  /** Issues a fresh leaf (new key) for a SPIFFE ID, signed by the intermediate. */
  issue(spiffeId: string): TestIdentity;
  dispose(): void;
}

function openssl(args: string[], cwd: string): void {
  execFileSync("openssl", args, { cwd, stdio: ["ignore", "ignore", "pipe"] });
}

/** Root -> intermediate -> leaves, ECDSA P-256, made with the openssl CLI (independent of src/pki). */
export function makeTestPki(): TestPki {
  const dir = mkdtempSync(join(tmpdir(), "meshvault-sds-pki-"));
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
  const serial = (): string => `0x${randomBytes(16).toString("hex")}`;
  writeFileSync(
    join(dir, "ca.ext"),
    "basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n",
  );
  openssl(
    [
      "req",
      "-x509",
      ...ec,
      "-keyout",
      "root.key",
      "-out",
      "root.pem",
      "-days",
      "2",
      "-subj",
      "/O=meshvault-test/CN=SDS test root",
      "-addext",
      "basicConstraints=critical,CA:TRUE",
      "-addext",
      "keyUsage=critical,keyCertSign,cRLSign",
    ],
    dir,
  );
  openssl(
    [
      "req",
      "-new",
      ...ec,
      "-keyout",
      "int.key",
      "-out",
      "int.csr",
      "-subj",
      "/O=meshvault-test/CN=SDS test intermediate",
    ],
    dir,
  );
  openssl(
    [
      "x509",
      "-req",
      "-in",
      "int.csr",
      "-CA",
      "root.pem",
      "-CAkey",
      "root.key",
      "-set_serial",
      serial(),
      "-days",
      "2",
      "-extfile",
      "ca.ext",
      "-out",
      "int.pem",
    ],
    dir,
  );
  const rootPem = readFileSync(join(dir, "root.pem"), "utf8");
  const intermediatePem = readFileSync(join(dir, "int.pem"), "utf8");
  let n = 0;
  return {
    rootPem,
    intermediatePem,
    issue(spiffeId) {
      const base = `leaf${++n}`;
      writeFileSync(
        join(dir, `${base}.ext`),
        `basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=URI:${spiffeId}\n`,
      );
      openssl(
        ["req", "-new", ...ec, "-keyout", `${base}.key`, "-out", `${base}.csr`, "-subj", "/O=meshvault-test"],
        dir,
      );
      openssl(
        [
          "x509",
          "-req",
          "-in",
          `${base}.csr`,
          "-CA",
          "int.pem",
          "-CAkey",
          "int.key",
          "-set_serial",
          serial(),
          "-days",
          "1",
          "-extfile",
          `${base}.ext`,
          "-out",
          `${base}.pem`,
        ],
        dir,
      );
      const leafPem = readFileSync(join(dir, `${base}.pem`), "utf8");
      return {
        leafPem,
        certChainPem: leafPem + intermediatePem,
        privateKeyPem: readFileSync(join(dir, `${base}.key`), "utf8"),
      };
    },
    dispose() {
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
