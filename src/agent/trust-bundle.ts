// The one place an identity's trust bundle is composed. It has two sources, and during a root
// rotation neither is newer by arrival: a CA answer carries the roots the server published when
// it signed (possibly before it applied the phase whose root file the agent has already read),
// and the mounted root file can lag behind the CA (the kubelet updates it later). So the root
// file decides about every root it has ever listed (trusted while listed, not again once
// dropped), and a CA answer adds only roots the file has not listed yet.
import { isSelfSigned, parseCertificates } from "../pki/certificate.js";
import { joinPem, splitCertificates } from "../pki/pem.js";

/** The agent's reading of its mounted root file, shared by its identities. */
export class RootFileState {
  private lastPem: string | undefined;
  private current: readonly string[] = [];
  /** Every root any reading listed: the file has an opinion on these. */
  private readonly listed = new Set<string>();

  /** The self-signed certificates (PEM) of the last reading that held any. */
  get roots(): readonly string[] {
    return this.current;
  }

  /**
   * Takes a reading of the file; true when the roots it lists changed. A reading without a
   * parsable root (a file being replaced, or not PEM) changes nothing.
   */
  read(pem: string): boolean {
    if (pem === this.lastPem) return false;
    this.lastPem = pem;
    let roots: string[];
    try {
      roots = parseCertificates(pem, "root file")
        .filter(isSelfSigned)
        .map((c) => c.pem);
    } catch {
      return false;
    }
    if (roots.length === 0 || sameRoots(roots, this.current)) return false;
    this.current = roots;
    for (const r of roots) this.listed.add(r);
    return true;
  }

  hasListed(rootPem: string): boolean {
    return this.listed.has(rootPem);
  }
}

/**
 * The bundle to publish for a certificate whose verified path ends at `anchorPem`, given with the
 * roots of the CA answer that carried it. The root file counts only when it holds that anchor
 * (a file with only the CA's TLS roots is never taken for the mesh's): then its roots, plus the
 * answer's roots it has never listed.
 */
export function composeTrustBundle(
  answerRootsPem: string,
  anchorPem: string,
  file: RootFileState | undefined,
): string {
  if (!file?.roots.includes(anchorPem)) return answerRootsPem;
  const added = splitCertificates(answerRootsPem).filter((r) => !file.hasListed(r));
  return joinPem([...file.roots, ...added]);
}

/** Whether two bundles hold the same roots, in any order. */
export function sameRoots(a: readonly string[], b: readonly string[]): boolean {
  const have = new Set(b);
  return a.length === have.size && a.every((r) => have.has(r));
}
