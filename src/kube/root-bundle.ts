// The bundle published as `root-cert.pem`: the authority's current roots plus, for
// an overlap window, roots it stopped naming. Workloads whose certificates chain
// to the old root keep being trusted by peers that already picked up the new
// bundle, until they have rotated onto the new root.
import { parseCertificate } from "../pki/certificate.js";
import { splitCertificates } from "../pki/pem.js";

export class RootBundle {
  private current: string[] = [];
  /** Root PEM -> when it left the authority's bundle (ms). */
  private readonly retired = new Map<string, number>();

  constructor(
    private readonly overlapMs: number,
    private readonly now: () => number = Date.now,
  ) {}

  /** Takes the authority's current roots; returns true when the published bundle changed. */
  update(roots: readonly string[]): boolean {
    const before = this.pem();
    const next = normalize(roots);
    if (next.length === 0) return false; // an authority not ready yet must not unpublish the roots
    for (const old of this.current)
      if (!next.includes(old) && !this.retired.has(old)) this.retired.set(old, this.now());
    for (const r of next) this.retired.delete(r);
    this.current = next;
    return this.pem() !== before;
  }

  /**
   * Roots found already published (e.g. by a previous leader) that the authority no
   * longer names: kept for one overlap window from now, since we cannot know when
   * they were retired.
   */
  adopt(publishedPem: string): void {
    for (const r of normalize([publishedPem]))
      if (!this.current.includes(r) && !this.retired.has(r)) this.retired.set(r, this.now());
  }

  /** Current roots first, then retired ones still in their window and not expired; "" when none. */
  pem(): string {
    const now = this.now();
    const kept: string[] = [];
    for (const [r, at] of this.retired) {
      if (now - at >= this.overlapMs || expired(r, now)) this.retired.delete(r);
      else kept.push(r);
    }
    return [...this.current, ...kept].join("");
  }
}

function normalize(bundles: readonly string[]): string[] {
  const out: string[] = [];
  for (const b of bundles) for (const c of splitCertificates(b)) if (!out.includes(c)) out.push(c);
  return out;
}

function expired(pem: string, now: number): boolean {
  try {
    return parseCertificate(pem).notAfter.getTime() <= now;
  } catch {
    return true;
  }
}
