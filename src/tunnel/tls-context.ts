// TLS settings shared by both tunnel modes, and the identity of our own certificate.
import tls from "node:tls";
import { parseCertificate } from "../pki/certificate.js";
import type { TlsCredentials } from "./credentials.js";

export type TlsVersion = "TLSv1.2" | "TLSv1.3";

export function secureContextOptions(c: TlsCredentials, minVersion: TlsVersion): tls.SecureContextOptions {
  return { cert: c.certChainPem, key: c.privateKeyPem, ca: c.rootsPem, minVersion };
}

export function createContext(c: TlsCredentials, minVersion: TlsVersion): tls.SecureContext {
  return tls.createSecureContext(secureContextOptions(c, minVersion));
}

export interface OwnCertificate {
  spiffeId: string | undefined;
  notAfter: Date;
  serial: string;
}

export function describeOwn(c: TlsCredentials): OwnCertificate {
  const leaf = parseCertificate(c.certChainPem, "tunnel certificate");
  return { spiffeId: leaf.sans.uris[0], notAfter: leaf.notAfter, serial: leaf.serialHex };
}
