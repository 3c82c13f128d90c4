// One CreateCertificate call as both gRPC transports (grpc-ca.ts, grpc-h2-ca.ts) answer it:
// the caller's credentials, the policy call, the outcome as a gRPC status, metrics and log line.
import type { Logger } from "../log/logger.js";
import type { CallerCredentials } from "../identity/authenticator.js";
import { CaServiceError, Code, createCertificate, type CaServiceDeps } from "./ca-service.js";
import type { CaMetrics } from "./metrics.js";
import { structToPlain, type WireCertificateRequest } from "./proto.js";

const CODE_NAMES: Record<number, string> = {
  [Code.INVALID_ARGUMENT]: "INVALID_ARGUMENT",
  [Code.PERMISSION_DENIED]: "PERMISSION_DENIED",
  [Code.INTERNAL]: "INTERNAL",
  [Code.UNAVAILABLE]: "UNAVAILABLE",
  [Code.UNAUTHENTICATED]: "UNAUTHENTICATED",
};

/** The largest request message either transport accepts (RESOURCE_EXHAUSTED above). */
export const MAX_REQUEST_MESSAGE_BYTES = 256 * 1024;

export interface CaCallOptions {
  deps: CaServiceDeps;
  log: Logger;
  metrics: CaMetrics;
}

/** A running CA gRPC API, whichever transport serves it. */
export interface CaApiServer {
  port: number;
  /**
   * Stops accepting connections, lets calls in flight finish for the grace period, then closes
   * every connection left (`forced`). Calling it again returns the same shutdown.
   */
  shutdown(): Promise<{ forced: boolean }>;
}

/** The answer: the chain (status OK), or an error status code with its message. */
export type CaCallOutcome = { ok: true; certChain: string[] } | { ok: false; code: number; message: string };

/**
 * The caller's credentials from the `authorization` and `clusterid` metadata (the first value
 * of each) and the client certificate. `peerCertificateDer` must be set only when TLS verified
 * the certificate against the trust bundle: an unverified one must never reach an authenticator.
 */
export function callerCredentials(
  authorization: unknown,
  clusterId: unknown,
  peerCertificateDer: Uint8Array | undefined,
): CallerCredentials {
  const creds: CallerCredentials = { peerCertificates: peerCertificateDer ? [peerCertificateDer] : [] };
  if (typeof authorization === "string") creds.authorization = authorization;
  if (typeof clusterId === "string") creds.clusterId = clusterId;
  return creds;
}

/** Runs the policy for one request; never rejects. `peer` names the caller in a refusal's log line. */
export async function answerCreateCertificate(
  o: CaCallOptions,
  req: WireCertificateRequest,
  creds: CallerCredentials,
  peer: () => string,
): Promise<CaCallOutcome> {
  const started = process.hrtime.bigint();
  const seconds = (): number => Number(process.hrtime.bigint() - started) / 1e9;
  try {
    const res = await createCertificate(
      o.deps,
      {
        csr: req.csr ?? "",
        validityDuration: Number(req.validityDuration ?? 0),
        metadata: structToPlain(req.metadata),
      },
      creds,
    );
    o.metrics.requests.inc({ result: "issued", code: "OK" });
    o.metrics.istio.record({ ok: true });
    o.metrics.latency.observe({ result: "issued" }, seconds());
    o.log.debug({ identity: res.identity.uri, method: res.caller.method }, "issued certificate");
    return { ok: true, certChain: res.chain };
  } catch (err) {
    const e =
      err instanceof CaServiceError
        ? err
        : new CaServiceError(Code.INTERNAL, `internal error: ${(err as Error).message ?? String(err)}`);
    const name = CODE_NAMES[e.code] ?? String(e.code);
    o.metrics.requests.inc({ result: "error", code: name });
    o.metrics.istio.record({ ok: false, stage: e.stage });
    o.metrics.latency.observe({ result: "error" }, seconds());
    const level = e.code === Code.INTERNAL ? "error" : "info";
    o.log[level]({ code: name, reason: e.message, peer: peer() }, "refused CreateCertificate");
    return { ok: false, code: e.code, message: e.message };
  }
}
