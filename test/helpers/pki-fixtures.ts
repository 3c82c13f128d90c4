// A root and an intermediate made with our own pki, for tests that need a CA.
import { generateKeyPairFor, type KeyAlgorithm } from "../../src/pki/keys.js";
import { issueCa, createSigner, parseIssued, type Signer } from "../../src/pki/issue.js";
import type { Certificate } from "../../src/pki/certificate.js";

export interface TestCa {
  root: Certificate;
  rootSigner: Signer;
  intermediate: Certificate;
  signer: Signer;
}

export function makeTestCa(alg: KeyAlgorithm = "ec-p256", ttlSeconds = 86400 * 30): TestCa {
  const rootKey = generateKeyPairFor(alg);
  const root = parseIssued(
    issueCa({
      subject: { organization: "test", commonName: "test root" },
      key: rootKey.privateKey,
      ttlSeconds: ttlSeconds * 2,
    }),
  );
  const rootSigner = createSigner(root, rootKey.privateKey);
  const intKey = generateKeyPairFor(alg);
  const intermediate = parseIssued(
    issueCa(
      {
        subject: { organization: "test", commonName: "test intermediate" },
        key: intKey.publicKey,
        ttlSeconds,
        pathLen: 0,
      },
      rootSigner,
    ),
  );
  return { root, rootSigner, intermediate, signer: createSigner(intermediate, intKey.privateKey) };
}

/** A self-signed root (PEM) named `cn` with a key of its own: another CA's root, or a rotation's new one. */
export function selfSignedRootPem(cn: string, ttlSeconds = 86400): string {
  return issueCa({ subject: { commonName: cn }, key: generateKeyPairFor("ec-p256").privateKey, ttlSeconds })
    .pem;
}
