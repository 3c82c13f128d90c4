// Serves IstioCertificateService over TLS with grpc-js; the policy lives in ca-service.ts.
import * as grpc from "@grpc/grpc-js";
import type { Logger } from "../log/logger.js";
import type { CallerCredentials } from "../identity/authenticator.js";
import { CaServiceError, Code, createCertificate, type CaServiceDeps } from "./ca-service.js";
import type { CaMetrics } from "./metrics.js";
import {
  istioCaServiceDefinition,
  structToPlain,
  type WireCertificateRequest,
  type WireCertificateResponse,
} from "./proto.js";

const CODE_NAMES: Record<number, string> = {
  [Code.INVALID_ARGUMENT]: "INVALID_ARGUMENT",
  [Code.PERMISSION_DENIED]: "PERMISSION_DENIED",
  [Code.INTERNAL]: "INTERNAL",
  [Code.UNAVAILABLE]: "UNAVAILABLE",
  [Code.UNAUTHENTICATED]: "UNAUTHENTICATED",
};

/**
 * Server credentials whose certificate can be replaced while the server runs. Without a
 * certificate yet (the authority has not started) every TLS handshake fails, so the port can
 * be held from the start while clients see the CA as unavailable.
 */
export class ReloadableServerCredentials extends grpc.ServerCredentials {
  private current: { cert?: Buffer; key?: Buffer; ca?: Buffer };
  constructor(certChainPem?: string, keyPem?: string, trustBundlePem?: string) {
    const ctx = {
      ...(certChainPem !== undefined ? { cert: Buffer.from(certChainPem) } : {}),
      ...(keyPem !== undefined ? { key: Buffer.from(keyPem) } : {}),
      ...(trustBundlePem ? { ca: Buffer.from(trustBundlePem) } : {}),
    };
    // requestCert without rejectUnauthorized: a client certificate is optional (first issuance
    // uses a token). grpc-js exposes a peer certificate only when TLS verified it against `ca`;
    // the client-cert authenticator then checks it again, SPIFFE rules included.
    super({ requestCert: true, rejectUnauthorized: false, minVersion: "TLSv1.2" }, ctx);
    this.current = ctx;
  }
  update(certChainPem: string, keyPem: string): void {
    this.current = { ...this.current, cert: Buffer.from(certChainPem), key: Buffer.from(keyPem) };
    this.updateSecureContextOptions(this.current);
  }
  updateTrustBundle(trustBundlePem: string): void {
    if (this.current.ca?.toString() === trustBundlePem) return;
    this.current = { ...this.current, ca: Buffer.from(trustBundlePem) };
    this.updateSecureContextOptions(this.current);
  }
  _equals(other: grpc.ServerCredentials): boolean {
    return other === this;
  }
}

function credentialsOf(
  call: grpc.ServerUnaryCall<WireCertificateRequest, WireCertificateResponse>,
): CallerCredentials {
  const md = call.metadata;
  const auth = md.get("authorization")[0];
  const cluster = md.get("clusterid")[0];
  const peer = call.getAuthContext()?.sslPeerCertificate;
  const creds: CallerCredentials = { peerCertificates: peer?.raw ? [new Uint8Array(peer.raw)] : [] };
  if (typeof auth === "string") creds.authorization = auth;
  if (typeof cluster === "string") creds.clusterId = cluster;
  return creds;
}

export interface GrpcCaOptions {
  deps: CaServiceDeps;
  credentials: ReloadableServerCredentials;
  address: string;
  log: Logger;
  metrics: CaMetrics;
}

export async function startGrpcCa(o: GrpcCaOptions): Promise<{ server: grpc.Server; port: number }> {
  const server = new grpc.Server({
    "grpc.max_receive_message_length": 256 * 1024,
    "grpc.keepalive_permit_without_calls": 1,
  });
  server.addService(istioCaServiceDefinition(), {
    CreateCertificate: (
      call: grpc.ServerUnaryCall<WireCertificateRequest, WireCertificateResponse>,
      callback: grpc.sendUnaryData<WireCertificateResponse>,
    ) => {
      const started = process.hrtime.bigint();
      const creds = credentialsOf(call);
      const req = call.request;
      createCertificate(
        o.deps,
        {
          csr: req.csr ?? "",
          validityDuration: Number(req.validityDuration ?? 0),
          metadata: structToPlain(req.metadata),
        },
        creds,
      ).then(
        (res) => {
          o.metrics.requests.inc({ result: "issued", code: "OK" });
          o.metrics.istio.record({ ok: true });
          o.metrics.latency.observe({ result: "issued" }, Number(process.hrtime.bigint() - started) / 1e9);
          o.log.debug({ identity: res.identity.uri, method: res.caller.method }, "issued certificate");
          callback(null, { certChain: res.chain });
        },
        (err: unknown) => {
          const e =
            err instanceof CaServiceError
              ? err
              : new CaServiceError(Code.INTERNAL, `internal error: ${(err as Error).message ?? String(err)}`);
          const name = CODE_NAMES[e.code] ?? String(e.code);
          o.metrics.requests.inc({ result: "error", code: name });
          o.metrics.istio.record({ ok: false, stage: e.stage });
          o.metrics.latency.observe({ result: "error" }, Number(process.hrtime.bigint() - started) / 1e9);
          const level = e.code === Code.INTERNAL ? "error" : "info";
          o.log[level]({ code: name, reason: e.message, peer: call.getPeer() }, "refused CreateCertificate");
          callback({ code: e.code, details: e.message });
        },
      );
    },
  });
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync(o.address, o.credentials, (err, p) =>
      err
        ? reject(new Error(`cannot listen on ${o.address} for the CA gRPC API: ${err.message}`))
        : resolve(p),
    ),
  );
  return { server, port };
}
