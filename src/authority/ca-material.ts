// Signing material held in memory (a CA cert + key, its chain and roots), shared by every
// backend that signs locally: local, files, vault-kv, vault-intermediate. Backends swap a
// whole CaMaterial at once, so an in-flight request always signs with one consistent set.
import { createPrivateKey, type KeyObject } from "node:crypto";
import { verifyChain } from "../pki/chain.js";
import {
  describeCertificate,
  isSelfSigned,
  parseCertificates,
  type Certificate,
} from "../pki/certificate.js";
import { verifyCsr } from "../pki/csr.js";
import { createSigner, issueLeaf, type LeafOptions, type Signer } from "../pki/issue.js";
import type { SpiffeId } from "../pki/spiffe.js";
import type { IssuedChain, Readiness, SignRequest } from "./authority.js";

export interface CaMaterial {
  signer: Signer;
  /** Certificates between the signing CA and the root, signing CA first; no root. */
  chain: Certificate[];
  roots: Certificate[];
  rootsPem: string[];
  /** Signing CA + chain, PEM each, as placed after the leaf. */
  intermediatesPem: string[];
}

export class CaMaterialError extends Error {
  override name = "CaMaterialError";
}

export interface CaMaterialInput {
  /** The signing CA certificate (PEM; extra certificates after it are treated as chain). */
  certPem: string;
  /** Its private key (PEM, PKCS#8, PKCS#1 or SEC1). */
  keyPem: string | KeyObject;
  /** Certificates from the signing CA up to (optionally including) the root. */
  chainPem?: string;
  /** Root(s) to trust. When omitted, the last certificate of the chain must be self-signed and is the root. */
  rootPem?: string;
  /** Names the source in errors, e.g. "files in /etc/cacerts". */
  source: string;
}

/** Validates and assembles signing material: key matches cert, chain reaches a root. */
export function loadCaMaterial(input: CaMaterialInput, at = new Date()): CaMaterial {
  const fail = (what: string): never => {
    throw new CaMaterialError(`${input.source}: ${what}`);
  };
  let certs: Certificate[];
  let extra: Certificate[] = [];
  let roots: Certificate[] = [];
  try {
    certs = parseCertificates(input.certPem, "CA certificate");
    if (input.chainPem?.trim()) extra = parseCertificates(input.chainPem, "certificate chain");
    if (input.rootPem?.trim()) roots = parseCertificates(input.rootPem, "root certificate");
  } catch (err) {
    return fail((err as Error).message);
  }
  let key: KeyObject;
  try {
    key = typeof input.keyPem === "string" ? createPrivateKey(input.keyPem) : input.keyPem;
  } catch {
    return fail("CA private key cannot be read: expected an unencrypted PEM private key");
  }
  const caCert = certs[0]!;
  let signer: Signer;
  try {
    signer = createSigner(caCert, key);
  } catch (err) {
    return fail((err as Error).message);
  }
  // The chain may or may not repeat the CA cert and may or may not include the root.
  const seen = new Set<string>([Buffer.from(caCert.der).toString("base64")]);
  const pool: Certificate[] = [];
  for (const c of [...certs.slice(1), ...extra]) {
    const k = Buffer.from(c.der).toString("base64");
    if (seen.has(k)) continue;
    seen.add(k);
    pool.push(c);
  }
  if (roots.length === 0) {
    const last = pool.at(-1) ?? caCert;
    if (!isSelfSigned(last))
      return fail("no root certificate given and the chain does not end in a self-signed root");
    roots = [last];
  }
  const rootKeys = new Set(roots.map((r) => Buffer.from(r.der).toString("base64")));
  const intermediates = pool.filter((c) => !rootKeys.has(Buffer.from(c.der).toString("base64")));
  let path: Certificate[];
  try {
    path =
      isSelfSigned(caCert) && rootKeys.has(Buffer.from(caCert.der).toString("base64"))
        ? [caCert]
        : verifyChain(caCert, intermediates, roots, { at });
  } catch (err) {
    return fail(`CA certificate does not chain to the root: ${(err as Error).message}`);
  }
  const chain = path.filter((c) => !rootKeys.has(Buffer.from(c.der).toString("base64")));
  return {
    signer,
    chain,
    roots,
    rootsPem: roots.map((r) => r.pem),
    intermediatesPem: chain.map((c) => c.pem),
  };
}

/** What issueLeaf needs from a sign request for `identity`. */
export function leafOptions(request: SignRequest, identity: SpiffeId): LeafOptions {
  return {
    spki: request.csr.spki,
    spiffeId: identity.uri,
    ttlSeconds: request.ttlSeconds,
    ...(request.commonName !== undefined ? { commonName: request.commonName } : {}),
    ...(request.dnsNames?.length ? { dnsNames: request.dnsNames } : {}),
    ...(request.ipAddresses?.length ? { ipAddresses: request.ipAddresses } : {}),
  };
}

/** Signs a workload leaf with `material` for `identity`. */
export function signLeaf(material: CaMaterial, request: SignRequest, identity: SpiffeId): IssuedChain {
  verifyCsr(request.csr);
  const leaf = issueLeaf(material.signer, leafOptions(request, identity));
  return { leafPem: leaf.pem, intermediatesPem: material.intermediatesPem, rootsPem: material.rootsPem };
}

/**
 * Readiness of an authority that signs with `m` in memory: ready while the signing CA is
 * valid, until its notAfter. `missing` is the reason while nothing is loaded; `fix` is said
 * when the CA has expired.
 */
export function materialReadiness(
  m: CaMaterial | undefined,
  missing: string,
  fix: string,
  now = new Date(),
): Readiness {
  if (!m) return { ready: false, reason: missing };
  const ca = m.signer.cert;
  if (ca.notAfter <= now)
    return {
      ready: false,
      reason: `the signing CA ${describeCertificate(ca)} expired at ${ca.notAfter.toISOString()}: ${fix}`,
    };
  if (ca.notBefore > now)
    return {
      ready: false,
      reason: `the signing CA ${describeCertificate(ca)} is not valid before ${ca.notBefore.toISOString()}: check the clock`,
    };
  return { ready: true, until: ca.notAfter, detail: `signing with ${describeCertificate(ca)}` };
}

/**
 * How an authority that holds CaMaterial signs a leaf: signLeaf on this thread, or the
 * server's issuance workers (src/server/issuance-pool.ts) when it has them.
 */
export type LeafSigner = (
  material: CaMaterial,
  request: SignRequest,
  identity: SpiffeId,
) => IssuedChain | Promise<IssuedChain>;
