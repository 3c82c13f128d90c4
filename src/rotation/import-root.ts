// `root rotate --import-root`: a root made outside Vault (seed 003: `openssl req -x509`)
// becomes a new issuer of the root mount. The bundle is checked here first (one self-signed
// CA certificate, its unencrypted private key) so a wrong file fails before Vault is touched.
import { createPrivateKey, X509Certificate } from "node:crypto";
import { isSelfSigned, parseCertificates, type Certificate } from "../pki/certificate.js";
import { privateKeyMatches } from "../pki/keys.js";
import { decodePem, encodePem } from "../pki/pem.js";
import type { VaultClient } from "../vault/index.js";

export class ImportRootError extends Error {
  override name = "ImportRootError";
}

/** The root certificate of a PEM bundle holding it and its private key; throws naming what is wrong. */
export function checkRootBundle(text: string, source: string): Certificate {
  const fail = (why: string): never => {
    throw new ImportRootError(`--import-root ${source}: ${why}`);
  };
  let certs: Certificate[] = [];
  try {
    certs = parseCertificates(text, source);
  } catch (err) {
    fail((err as Error).message);
  }
  const blocks = decodePem(text).filter((b) => b.type.endsWith("PRIVATE KEY"));
  if (certs.length !== 1)
    fail(`holds ${certs.length} certificates; expected exactly one (the new root) and its private key`);
  const cert = certs[0]!;
  if (!isSelfSigned(cert)) fail("the certificate is not self-signed: import a root, not an intermediate");
  if (!cert.isCa) fail("the certificate is not a CA (basicConstraints CA:TRUE is missing)");
  if (cert.keyUsage && !cert.keyUsage.includes("keyCertSign"))
    fail("the certificate's keyUsage lacks keyCertSign, so it cannot sign intermediates");
  if (cert.notAfter.getTime() <= Date.now())
    fail(`the certificate expired at ${cert.notAfter.toISOString()}`);
  if (blocks.length === 0) fail("no private key in the file: append the root's key (PEM) to the certificate");
  if (blocks.some((b) => b.type === "ENCRYPTED PRIVATE KEY"))
    fail("the private key is encrypted: decrypt it first (openssl pkey -in key.pem -out plain.pem)");
  if (blocks.length > 1) fail(`holds ${blocks.length} private keys; expected only the root's`);
  let matches = false;
  try {
    matches = privateKeyMatches(createPrivateKey(encodePem(blocks[0]!.type, blocks[0]!.der)), cert.spki);
  } catch {
    fail(`the ${blocks[0]!.type} block cannot be read as a private key`);
  }
  if (!matches) fail("the private key does not belong to the certificate");
  return cert;
}

/**
 * Imports the checked bundle at `<rootMount>/issuers/import/bundle` and returns the issuer id
 * holding that certificate with its key (also when an earlier, interrupted run imported it).
 */
export async function importRoot(
  admin: VaultClient,
  rootMount: string,
  bundlePem: string,
  cert: Certificate,
): Promise<string> {
  const path = `${rootMount}/issuers/import/bundle`;
  await admin.write(path, { pem_bundle: bundlePem });
  const fp = new X509Certificate(cert.pem).fingerprint256;
  for (const id of await admin.list(`${rootMount}/issuers`)) {
    const r = await admin.read<{ certificate?: string; key_id?: string }>(`${rootMount}/issuer/${id}`);
    const pem = r?.data?.certificate;
    if (!pem || new X509Certificate(pem).fingerprint256 !== fp) continue;
    if (!r.data?.key_id)
      throw new ImportRootError(
        `${path} on Vault at ${admin.address} stored the certificate as issuer ${id} without its key, so it cannot sign: ` +
          `check that the bundle's key is one Vault accepts (RSA, EC P-256/P-384/P-521 or Ed25519, unencrypted)`,
      );
    return id;
  }
  throw new ImportRootError(
    `${path} on Vault at ${admin.address} answered, but no issuer of ${rootMount} holds the imported certificate: check \`bao list ${rootMount}/issuers\``,
  );
}
