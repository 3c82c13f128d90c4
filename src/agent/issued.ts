// Checks a CA response before the agent trusts it: the leaf certifies our key,
// chains to the root bundle the CA sent, and names the identity we expect.
import type { KeyObject } from "node:crypto";
import { parseCertificate, parseCertificates, type Certificate } from "../pki/certificate.js";
import { verifyChain } from "../pki/chain.js";
import { privateKeyMatches } from "../pki/keys.js";
import { joinPem, splitCertificates } from "../pki/pem.js";
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

export class IssuedChainError extends Error {
  override name = "IssuedChainError";
}

export function checkIssuedChain(
  chain: readonly string[],
  privateKey: KeyObject,
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
  if (!privateKeyMatches(privateKey, leaf.spki))
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
    const roots = parseCertificates(rootsPem, "root bundle");
    path = verifyChain(
      leaf,
      intermediatePems.map((p) => parseCertificate(p, "intermediate")),
      roots,
      { at },
    );
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
