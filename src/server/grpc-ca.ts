// Serves IstioCertificateService over TLS with grpc-js; the policy lives in ca-service.ts.
import * as grpc from "@grpc/grpc-js";
import type { CallerCredentials } from "../identity/authenticator.js";
import {
  answerCreateCertificate,
  callerCredentials,
  MAX_REQUEST_MESSAGE_BYTES,
  type CaApiServer,
  type CaCallOptions,
} from "./ca-call.js";
import {
  istioCaServiceDefinition,
  type WireCertificateRequest,
  type WireCertificateResponse,
} from "./proto.js";
import type { ReloadableServerCredentials } from "./server-credentials.js";
import { closeWithGrace } from "../timing/grace.js";

function credentialsOf(
  call: grpc.ServerUnaryCall<WireCertificateRequest, WireCertificateResponse>,
): CallerCredentials {
  const peer = call.getAuthContext()?.sslPeerCertificate;
  return callerCredentials(
    call.metadata.get("authorization")[0],
    call.metadata.get("clusterid")[0],
    peer?.raw ? new Uint8Array(peer.raw) : undefined,
  );
}

export interface GrpcCaOptions extends CaCallOptions {
  credentials: ReloadableServerCredentials;
  address: string;
  /** How long shutdown() lets calls in flight finish before it closes their connections. */
  shutdownGraceMs: number;
}

export async function startGrpcCa(o: GrpcCaOptions): Promise<CaApiServer> {
  const server = new grpc.Server({
    "grpc.max_receive_message_length": MAX_REQUEST_MESSAGE_BYTES,
    "grpc.keepalive_permit_without_calls": 1,
  });
  server.addService(istioCaServiceDefinition(), {
    CreateCertificate: (
      call: grpc.ServerUnaryCall<WireCertificateRequest, WireCertificateResponse>,
      callback: grpc.sendUnaryData<WireCertificateResponse>,
    ) => {
      void answerCreateCertificate(o, call.request, credentialsOf(call), () => call.getPeer()).then((r) =>
        r.ok ? callback(null, { certChain: r.certChain }) : callback({ code: r.code, details: r.message }),
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
  let shutdown: Promise<{ forced: boolean }> | undefined;
  return {
    port,
    shutdown: () =>
      (shutdown ??= closeWithGrace({
        graceful: (done) => server.tryShutdown(() => done()),
        // A peer that never ends its request would hold tryShutdown() forever.
        force: () => server.forceShutdown(),
        graceMs: o.shutdownGraceMs,
      })),
  };
}
