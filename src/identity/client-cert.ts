import { decodePem } from "../pki/pem.js";
// Client-certificate caller authentication: a workload renewing with the SVID it
// already holds. The TLS handshake has proven the caller owns the leaf's key; the
// server must request client certificates without verifying them itself
// (grpc-js `checkClientCertificate: false`), because the trust bundle changes at
// runtime and we want a precise reason when a certificate is refused.
import { parseCertificateDer, type Certificate } from "../pki/certificate.js";
import { parseCertificates } from "../pki/certificate.js";
import { ChainError, verifyChain } from "../pki/chain.js";
import { OID } from "../pki/oids.js";
import { istioParts, parseSpiffeId, SpiffeIdError, type SpiffeId } from "../pki/spiffe.js";
import {
  AuthenticationError,
  AuthenticatorUnavailableError,
  type AuthenticatedCaller,
  type Authenticator,
  type CallerCredentials,
} from "./authenticator.js";

export interface ClientCertAuthenticatorOptions {
  /** Trust domain of the SPIFFE IDs we issue; a caller from another one is refused. */
  trustDomain: string;
  /** Current root PEMs (may change at runtime, e.g. during a root rotation). */
  trustBundle: () => string[];
  /**
   * Intermediates this CA hands out, PEM. grpc-js exposes only the peer's leaf, so the
   * chain is completed from what we issued ourselves.
   */
  intermediates?: () => string[];
  /** Verification time, for tests; defaults to now. */
  now?: () => Date;
}

/** A chain longer than this is not a workload's: refuse before doing signature work. */
const MAX_CHAIN = 8;

export class ClientCertAuthenticator implements Authenticator {
  readonly name = "client-cert";
  private cachedKey = "";
  private cachedRoots: Certificate[] = [];

  constructor(private readonly opts: ClientCertAuthenticatorOptions) {}

  async authenticate(creds: CallerCredentials): Promise<AuthenticatedCaller | undefined> {
    const ders = creds.peerCertificates;
    if (ders.length === 0) return undefined;
    if (ders.length > MAX_CHAIN)
      throw new AuthenticationError(
        `client presented ${ders.length} certificates; at most ${MAX_CHAIN} (leaf and intermediates) are accepted`,
      );
    const certs = ders.map((der, i) => {
      try {
        return parseCertificateDer(der);
      } catch (err) {
        throw new AuthenticationError(
          `client certificate #${i + 1} cannot be parsed: ${(err as Error).message}`,
        );
      }
    });
    const leaf = certs[0]!;
    if (leaf.isCa)
      throw new AuthenticationError(
        "client certificate is a CA certificate (basicConstraints CA:true): present the workload's SVID, not a CA",
      );
    if (leaf.extKeyUsage && !leaf.extKeyUsage.includes(OID.clientAuth))
      throw new AuthenticationError(
        "client certificate's extendedKeyUsage lacks clientAuth: it is not a workload SVID",
      );
    const id = this.spiffeIdOf(leaf);

    try {
      verifyChain(leaf, [...certs.slice(1), ...this.knownIntermediates()], this.roots(), {
        at: this.opts.now?.() ?? new Date(),
      });
    } catch (err) {
      if (!(err instanceof ChainError)) throw err;
      throw new AuthenticationError(`client certificate for ${id.uri} does not verify: ${err.message}`);
    }
    const parts = istioParts(id)!;
    return { identity: id, method: this.name, ...parts };
  }

  private intermediatesKey = "";
  private intermediatesCache: Certificate[] = [];
  private knownIntermediates(): Certificate[] {
    const pems = this.opts.intermediates?.() ?? [];
    const key = pems.join("");
    if (key !== this.intermediatesKey) {
      this.intermediatesCache = pems.flatMap((p) => {
        try {
          return [parseCertificateDer(decodePem(p)[0]!.der)];
        } catch {
          return [];
        }
      });
      this.intermediatesKey = key;
    }
    return this.intermediatesCache;
  }

  /** Exactly one URI SAN, a SPIFFE ID in our trust domain, Istio-shaped. */
  private spiffeIdOf(leaf: Certificate): SpiffeId {
    const uris = leaf.sans.uris;
    if (uris.length !== 1)
      throw new AuthenticationError(
        `client certificate has ${uris.length} URI SANs; an X.509-SVID has exactly one (its SPIFFE ID)`,
      );
    let id: SpiffeId;
    try {
      id = parseSpiffeId(uris[0]!);
    } catch (err) {
      if (!(err instanceof SpiffeIdError)) throw err;
      throw new AuthenticationError(`client certificate's URI SAN is not a SPIFFE ID: ${err.message}`);
    }
    if (id.trustDomain !== this.opts.trustDomain)
      throw new AuthenticationError(
        `client certificate's SPIFFE ID ${id.uri} is in trust domain ${JSON.stringify(id.trustDomain)}, but this CA issues for ${JSON.stringify(this.opts.trustDomain)}`,
      );
    if (!istioParts(id))
      throw new AuthenticationError(
        `client certificate's SPIFFE ID ${id.uri} is not an Istio workload ID (spiffe://<td>/ns/<ns>/sa/<sa>)`,
      );
    return id;
  }

  /** Parsed roots, re-parsed only when the bundle's text changes. */
  private roots(): Certificate[] {
    const pems = this.opts.trustBundle();
    const key = pems.join("\n");
    if (key === this.cachedKey && this.cachedRoots.length > 0) return this.cachedRoots;
    if (pems.length === 0)
      throw new AuthenticatorUnavailableError(
        "cannot verify client certificates: the trust bundle is empty (authority not ready?)",
      );
    try {
      const roots = pems.flatMap((pem, i) => parseCertificates(pem, `trust bundle entry #${i + 1}`));
      this.cachedRoots = roots;
      this.cachedKey = key;
      return roots;
    } catch (err) {
      throw new AuthenticatorUnavailableError(`cannot verify client certificates: ${(err as Error).message}`);
    }
  }
}
