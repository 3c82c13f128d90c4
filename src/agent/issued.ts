// Checks a CA response before the agent trusts it: the leaf certifies our key,
// chains to the root bundle the CA sent, and names the identity we expect.
import type { KeyObject } from "node:crypto";
import { parseCertificate, parseCertificates, type Certificate } from "../pki/certificate.js";
import { verifyChain } from "../pki/chain.js";
import { bytesEqual, children, decodeOne } from "../pki/der.js";
import { privateKeyMatches } from "../pki/keys.js";
import { decodePem, joinPem, splitCertificates } from "../pki/pem.js";
import { parseSpiffeId } from "../pki/spiffe.js";

export interface CheckedChain {
  leaf: Certificate;
  spiffeId: string;
  /** Leaf then intermediates, PEM (what Envoy's certificate_chain and cert-chain.pem hold). */
  certChainPem: string;
  /** The last element of the response: every root peers should trust. */
  rootsPem: string;
  /** Verified path leaf -> root, for display. */
  path: Certificate[];
}

// Every certificate a CA issues comes with the same intermediates and roots. Parsing and
// verifying them once per distinct chain (instead of once per identity) is most of the
// agent's CPU at a node agent's cold start; the leaf is still verified every time.
const CACHE_MAX = 16;
const parsed = new Map<string, Certificate[]>();
const verifiedUpper = new Map<string, { path: Certificate[]; until: number }>();

function remember<V>(m: Map<string, V>, k: string, v: V): V {
  if (m.size >= CACHE_MAX) m.delete(m.keys().next().value!);
  m.set(k, v);
  return v;
}

function parseCached(pem: string, what: string): Certificate[] {
  return parsed.get(pem) ?? remember(parsed, pem, parseCertificates(pem, what));
}

/**
 * leaf -> first intermediate is checked on every call; intermediates -> roots once per distinct
 * (intermediates, roots, hour), since that part is identical for every identity the CA serves.
 */
function verifyIssued(
  leaf: Certificate,
  intermediatePems: string[],
  rootsPem: string,
  at: Date,
): Certificate[] {
  const roots = parseCached(rootsPem, "root bundle");
  if (intermediatePems.length === 0) return verifyChain(leaf, [], roots, { at });
  const intermediates = intermediatePems.map((p) => parseCached(p, "intermediate")[0]!);
  const issuer = intermediates[0]!;
  // The leaf against its issuer alone (signature, validity, issuer is a CA with keyCertSign).
  verifyChain(leaf, [], [issuer], { at });
  const key = `${intermediatePems.join("")}\n${rootsPem}`;
  const hit = verifiedUpper.get(key);
  if (hit && hit.until > at.getTime()) return [leaf, ...hit.path];
  if (!issuer.isCa) throw new IssuedChainError("the leaf's issuer in the chain is not a CA certificate");
  const upper = verifyChain(issuer, intermediates.slice(1), roots, { at });
  const until = Math.min(at.getTime() + 3600_000, ...upper.map((c) => c.notAfter.getTime()));
  remember(verifiedUpper, key, { path: upper, until });
  return [leaf, ...upper];
}

export class IssuedChainError extends Error {
  override name = "IssuedChainError";
}

export function checkIssuedChain(
  chain: readonly string[],
  /** Our private key, or the DER SubjectPublicKeyInfo of its public half (cheaper to compare). */
  privateKey: KeyObject | Uint8Array,
  expectedSpiffeId: string | undefined,
  at: Date = new Date(),
): CheckedChain {
  const [leafPem, ...rest] = chain;
  const rootsPem = rest.at(-1);
  if (!leafPem || rootsPem === undefined)
    throw new IssuedChainError(
      `CA returned ${chain.length} chain element(s); need the leaf and the root bundle`,
    );
  const intermediatePems = rest.slice(0, -1).flatMap((p) => splitCertificates(p));
  const leafOnly = splitCertificates(leafPem);
  if (leafOnly.length !== 1)
    throw new IssuedChainError(
      `the first chain element holds ${leafOnly.length} certificates; expected only the leaf`,
    );
  let leaf: Certificate;
  try {
    leaf = parseCertificate(leafOnly[0]!, "issued leaf");
  } catch (err) {
    throw new IssuedChainError(`CA returned an unparsable leaf: ${(err as Error).message}`);
  }
  const matches =
    privateKey instanceof Uint8Array
      ? bytesEqual(privateKey, leaf.spki)
      : privateKeyMatches(privateKey, leaf.spki);
  if (!matches)
    throw new IssuedChainError("CA returned a certificate for another key than the one in our CSR");
  if (leaf.sans.uris.length !== 1)
    throw new IssuedChainError(
      `issued leaf has ${leaf.sans.uris.length} URI SANs; an X.509-SVID has exactly one`,
    );
  const spiffeId = parseSpiffeId(leaf.sans.uris[0]!).uri;
  if (expectedSpiffeId && spiffeId !== expectedSpiffeId)
    throw new IssuedChainError(
      `CA issued ${spiffeId} but this agent is configured as ${expectedSpiffeId}; check --namespace/--service-account and the token file`,
    );
  let path: Certificate[];
  try {
    path = verifyIssued(leaf, intermediatePems, rootsPem, at);
  } catch (err) {
    throw new IssuedChainError(`issued chain does not verify: ${(err as Error).message}`);
  }
  return {
    leaf,
    spiffeId,
    certChainPem: joinPem([leafOnly[0]!, ...intermediatePems]),
    rootsPem: joinPem(splitCertificates(rootsPem)),
    path,
  };
}

/**
 * The DER SubjectPublicKeyInfo inside a PKCS#10 CSR (CertificationRequestInfo's third field),
 * byte for byte what `spkiDer(key)` exports for the key that built it.
 */
export function csrSubjectPublicKeyInfo(csrPem: string): Uint8Array {
  const block = decodePem(csrPem)[0];
  if (block?.type !== "CERTIFICATE REQUEST") throw new Error("not a PEM CERTIFICATE REQUEST");
  const info = children(decodeOne(block.der))[0];
  const spki = info && children(info)[2];
  if (!spki) throw new Error("CSR without a SubjectPublicKeyInfo");
  return spki.raw;
}
