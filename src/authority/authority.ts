// One interface for every signing backend (local, files, vault-*): the server
// validates and authenticates, the authority only signs and names its roots.
import type { Csr, DecodedCsr } from "../pki/csr.js";
import type { SpiffeId } from "../pki/spiffe.js";

export interface SignRequest {
  /**
   * The CSR whose key gets certified: already verified (Csr), or decoded with its signature
   * still to check (DecodedCsr), which is checked where it is signed: verifyCsr before an
   * authority signs with its own key (the server's issuance workers, in the signing job), and
   * Vault itself on sign/<role> for vault-sign.
   */
  csr: Csr | DecodedCsr;
  /** Requested lifetime in seconds, already bounded by the server's policy. */
  ttlSeconds: number;
  /** Common name to carry over from the CSR, when the server's policy allows it. */
  commonName?: string;
  /** DNS names, only for meshvault's own serving certificate, never for workloads. */
  dnsNames?: string[];
  /** IP addresses, likewise only for the serving certificate. */
  ipAddresses?: string[];
  /**
   * The caller's bearer token (without "Bearer "), for backends that let the workload's own
   * credential decide (vault-sign with identity: workload). Never log it.
   */
  callerToken?: string;
}

/** What a workload receives: leaf, each intermediate on its own, and the roots. */
export interface IssuedChain {
  leafPem: string;
  /** Intermediates from the leaf's issuer upwards, one PEM certificate each; no root. */
  intermediatesPem: string[];
  /** The trust bundle: every root a peer should trust, PEM. */
  rootsPem: string[];
}

/**
 * What the authority can do right now. Ready: it can sign; `until` is when the material it
 * signs with stops being valid (absent when signing depends on a live backend, vault-sign),
 * `detail` says with what it signs. Not ready: `reason` names the cause and the fix.
 */
export type Readiness = { ready: true; until?: Date; detail?: string } | { ready: false; reason: string };

/** What every reload or renewal event carries; backends add what changed or why it failed. */
export interface MaterialReloadEvent {
  ok: boolean;
  at: Date;
}

export interface Authority {
  /** Backend name as used in configuration (`local`, `files`, `vault-sign`, ...). */
  readonly kind: string;
  /**
   * Loads or creates signing material; rejects with an actionable message when it cannot.
   * `signal` cancels the start (the server closing): every backend request takes it, and the
   * rejection is then an AbortError.
   */
  start(signal?: AbortSignal): Promise<void>;
  /** Signs `request` for `identity`; the identity is authenticated, never taken from the CSR. */
  sign(request: SignRequest, identity: SpiffeId): Promise<IssuedChain>;
  /** Current root certificates (PEM), the bundle peers should trust. */
  trustBundle(): string[];
  ready(): Readiness;
  /**
   * Present on backends whose signing material changes while they run (files, vault-kv,
   * vault-intermediate): called after every reload or renewal attempt; returns an unsubscribe.
   */
  onReload?(listener: (e: MaterialReloadEvent) => void): () => void;
  /** Stops timers and watchers. */
  close(): Promise<void>;
}

/** Raised when an authority cannot sign right now (Vault down, sealed): clients should retry. */
export class AuthorityUnavailableError extends Error {
  override name = "AuthorityUnavailableError";
}

/** Raised when the backend refused this particular request (policy): clients should not retry. */
export class AuthorityDeniedError extends Error {
  override name = "AuthorityDeniedError";
}
