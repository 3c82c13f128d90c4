// Chain building and verification: leaf -> intermediates -> one of the roots.
import { bytesEqual } from "./der.js";
import { describeCertificate, type Certificate } from "./certificate.js";
import { verifySignature } from "./keys.js";

export class ChainError extends Error {
  override name = "ChainError";
}

function issuedBy(child: Certificate, parent: Certificate): boolean {
  if (!bytesEqual(child.issuerRaw, parent.subjectRaw)) return false;
  if (child.authorityKeyId && parent.subjectKeyId && !bytesEqual(child.authorityKeyId, parent.subjectKeyId))
    return false;
  try {
    return verifySignature(child.signatureAlgorithm, parent.publicKey, child.tbs, child.signature);
  } catch {
    return false;
  }
}

function checkTime(cert: Certificate, at: Date): void {
  if (at < cert.notBefore)
    throw new ChainError(`${describeCertificate(cert)} is not valid before ${cert.notBefore.toISOString()}`);
  if (at > cert.notAfter)
    throw new ChainError(`${describeCertificate(cert)} expired at ${cert.notAfter.toISOString()}`);
}

function checkIssuerRole(issuer: Certificate, depthBelow: number): void {
  if (!issuer.isCa) throw new ChainError(`${describeCertificate(issuer)} signs others but is not a CA`);
  if (issuer.keyUsage && !issuer.keyUsage.includes("keyCertSign"))
    throw new ChainError(`${describeCertificate(issuer)} signs certificates but lacks keyUsage keyCertSign`);
  if (issuer.pathLen !== undefined && depthBelow > issuer.pathLen)
    throw new ChainError(
      `${describeCertificate(issuer)} has pathLen ${issuer.pathLen} but ${depthBelow} CA certificates sit below it`,
    );
}

export interface VerifyOptions {
  /** Defaults to now. */
  at?: Date;
}

/**
 * Verifies `leaf` up to one of `roots` through `intermediates` (any order).
 * Returns the path leaf-first, ending with the root; throws a ChainError naming
 * the certificate that does not chain.
 */
export function verifyChain(
  leaf: Certificate,
  intermediates: readonly Certificate[],
  roots: readonly Certificate[],
  opts: VerifyOptions = {},
): Certificate[] {
  if (roots.length === 0) throw new ChainError("trust bundle is empty: no root to verify against");
  const at = opts.at ?? new Date();
  const path: Certificate[] = [leaf];
  checkTime(leaf, at);
  let current = leaf;
  const pool = [...intermediates];
  for (let depth = 0; depth <= intermediates.length; depth++) {
    const root = roots.find((r) => issuedBy(current, r));
    if (root) {
      checkIssuerRole(root, depth);
      checkTime(root, at);
      path.push(root);
      return path;
    }
    const idx = pool.findIndex((c) => issuedBy(current, c));
    if (idx === -1) break;
    const next = pool.splice(idx, 1)[0]!;
    checkIssuerRole(next, depth);
    checkTime(next, at);
    path.push(next);
    current = next;
  }
  if (roots.some((r) => bytesEqual(r.der, current.der))) return path;
  throw new ChainError(
    `${describeCertificate(current)} does not chain to the trust bundle: no intermediate or root issued it (check that the chain and root files belong together)`,
  );
}
