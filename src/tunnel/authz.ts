// Peer identity: the SPIFFE ID in a TLS peer's leaf certificate, and the
// allow-list check (exact IDs or `spiffe://td/ns/<ns>/*` prefixes).
import type { PeerCertificate } from "node:tls";
import { parseCertificateDer } from "../pki/certificate.js";
import { matchesPattern, parseSpiffeId, parseSpiffePattern, type SpiffeId } from "../pki/spiffe.js";
import { TunnelFlagError } from "./flag-error.js";

export class PeerIdentityError extends Error {
  override name = "PeerIdentityError";
}

/** The peer's SPIFFE ID; throws PeerIdentityError when there is no certificate or no single valid URI SAN. */
export function peerSpiffeId(cert: Pick<PeerCertificate, "raw"> | undefined | null): SpiffeId {
  if (!cert?.raw || cert.raw.length === 0) throw new PeerIdentityError("peer presented no certificate");
  const parsed = parseCertificateDer(new Uint8Array(cert.raw));
  const uris = parsed.sans.uris.filter((u) => u.toLowerCase().startsWith("spiffe://"));
  if (uris.length !== 1)
    throw new PeerIdentityError(
      `peer certificate has ${uris.length} SPIFFE URI SANs; an X.509-SVID has exactly one`,
    );
  try {
    return parseSpiffeId(uris[0]!);
  } catch (err) {
    throw new PeerIdentityError(
      `peer certificate's URI SAN is not a valid SPIFFE ID: ${(err as Error).message}`,
      {
        cause: err,
      },
    );
  }
}

/** Validates allow-list entries up front so a typo fails at start, not at the first connection. */
export function validatePatterns(patterns: readonly string[], flag: string): void {
  for (const p of patterns) {
    try {
      parseSpiffePattern(p);
    } catch (err) {
      throw new TunnelFlagError(
        `${flag} ${JSON.stringify(p)}: ${(err as Error).message}; use spiffe://<trust-domain>/ns/<ns>/sa/<sa> or spiffe://<trust-domain>/ns/<ns>/*`,
        { cause: err },
      );
    }
  }
}

export function isAllowed(id: SpiffeId, patterns: readonly string[]): boolean {
  return patterns.some((p) => matchesPattern(id, p));
}
