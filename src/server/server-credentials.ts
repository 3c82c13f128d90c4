// The CA API's TLS settings, reloadable while the server runs; used by both gRPC transports
// (grpc-js takes them as ServerCredentials, the node:http2 server through `watch`).
import type { SecureContextOptions } from "node:tls";
import * as grpc from "@grpc/grpc-js";

/**
 * requestCert without rejectUnauthorized: a client certificate is optional (first issuance
 * uses a token). A transport exposes a peer certificate only when TLS verified it against `ca`
 * (`socket.authorized`); the client-cert authenticator then checks it again, SPIFFE rules included.
 */
export const CA_TLS_SERVER_OPTIONS = {
  requestCert: true,
  rejectUnauthorized: false,
  minVersion: "TLSv1.2",
} as const;

/**
 * Server credentials whose certificate can be replaced while the server runs. Without a
 * certificate yet (the authority has not started) every TLS handshake fails, so the port can
 * be held from the start while clients see the CA as unavailable.
 */
export class ReloadableServerCredentials extends grpc.ServerCredentials {
  private current: { cert?: Buffer; key?: Buffer; ca?: Buffer };
  private readonly listeners = new Set<(ctx: SecureContextOptions) => void>();
  constructor(certChainPem?: string, keyPem?: string, trustBundlePem?: string) {
    const ctx = {
      ...(certChainPem !== undefined ? { cert: Buffer.from(certChainPem) } : {}),
      ...(keyPem !== undefined ? { key: Buffer.from(keyPem) } : {}),
      ...(trustBundlePem ? { ca: Buffer.from(trustBundlePem) } : {}),
    };
    super({ ...CA_TLS_SERVER_OPTIONS }, ctx);
    this.current = ctx;
  }
  update(certChainPem: string, keyPem: string): void {
    this.current = { ...this.current, cert: Buffer.from(certChainPem), key: Buffer.from(keyPem) };
    this.changed();
  }
  updateTrustBundle(trustBundlePem: string): void {
    if (this.current.ca?.toString() === trustBundlePem) return;
    this.current = { ...this.current, ca: Buffer.from(trustBundlePem) };
    this.changed();
  }
  /** The secure context now (certificate, key, trust bundle; minVersion kept across reloads). */
  secureContextOptions(): SecureContextOptions {
    return { minVersion: CA_TLS_SERVER_OPTIONS.minVersion, ...this.current };
  }
  /** Calls `f` with the new secure context on every change; returns the unsubscribe. */
  watch(f: (ctx: SecureContextOptions) => void): () => void {
    this.listeners.add(f);
    return () => this.listeners.delete(f);
  }
  private changed(): void {
    this.updateSecureContextOptions(this.current);
    for (const f of this.listeners) f(this.secureContextOptions());
  }
  _equals(other: grpc.ServerCredentials): boolean {
    return other === this;
  }
}
