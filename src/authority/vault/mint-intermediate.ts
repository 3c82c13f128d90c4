// The one way meshvault gets an intermediate CA from Vault: key (made here, or by Vault at
// `<intermediateMount>/intermediate/generate/exported`), the root mount signs it at
// `<rootMount>/root/sign-intermediate`, the mount's roots become the trust bundle, and the
// result is checked as CA material (key matches, chain reaches a root). Used by the
// vault-intermediate authority (key kept in memory, renewed by its RenewalLoop) and by
// `meshvault cacerts` (the key is the product, written for istiod). Like SPIRE's Vault
// UpstreamAuthority, this only mints; when to mint again is the caller's loop.
//
// `set-signed` (store the signed certificate back in the intermediate mount) is an option:
// the vault-intermediate authority's exported mode does it (seed 003: the mount then knows
// the issuer meshvault signs with). `meshvault cacerts` does not: there istiod is the
// issuer, its documented Vault policy has no set-signed, and importing an issuer could
// become the intermediate mount's default issuer for everything else signed there.
import { createPrivateKey, type KeyObject } from "node:crypto";
import type { Certificate } from "../../pki/certificate.js";
import { buildCsr } from "../../pki/csr.js";
import { generateKeyPairAsync, type KeyAlgorithm } from "../../pki/keys.js";
import type { VaultClient } from "../../vault/index.js";
import { AuthorityUnavailableError } from "../authority.js";
import { CaMaterialError, loadCaMaterial, type CaMaterial } from "../ca-material.js";
import { parseAll, readIssuerRoots, readMountRoots, toAuthorityError } from "./common.js";

export interface MintIntermediateOptions {
  trustDomain: string;
  /** csr: the key is made in this process; exported: Vault makes it at the intermediate mount. */
  mode: "csr" | "exported";
  /** Mount holding the root, e.g. "pki". */
  rootMount: string;
  /** Mount that generates the key (mode exported) and, with setSigned, receives the certificate. */
  intermediateMount: string;
  /** Requested lifetime; Vault shortens it to the root's own notAfter or the mount's max TTL. */
  ttlSeconds: number;
  keyAlgorithm: KeyAlgorithm;
  commonName: string;
  /** Mode exported: store the signed certificate (with its chain) at `<intermediateMount>/intermediate/set-signed`. */
  setSigned: boolean;
  /** Prefix of error messages, e.g. "vault-intermediate (csr)". */
  label: string;
  /** Sign with this issuer of the root mount instead of its default (a root rotation's new root). */
  rootIssuer?: string | undefined;
}

/**
 * The PKI mounts a mint uses, each with the setting that names it (`field`): the root's, and in
 * exported mode the intermediate's. Callers check them first (checkPkiMount): a mistyped mount
 * would otherwise read as a missing policy (Vault answers 403 for both).
 */
export function mintMounts(
  o: Pick<MintIntermediateOptions, "mode" | "rootMount" | "intermediateMount">,
  field: (setting: "rootMount" | "intermediateMount") => string,
): [mount: string, field: string][] {
  const mounts: [string, string][] = [[o.rootMount, field("rootMount")]];
  if (o.mode === "exported") mounts.push([o.intermediateMount, field("intermediateMount")]);
  return mounts;
}

export interface MintedIntermediate {
  /** Signer (certificate + key), intermediates above it, and the mount's roots. */
  material: CaMaterial;
  key: KeyObject;
  /** When we asked Vault (epoch ms): the lifetime for renewal counts from here, not from a backdated notBefore. */
  issuedAt: number;
  notAfter: number;
}

function vaultKeyParams(alg: KeyAlgorithm): { key_type: string; key_bits?: number } {
  switch (alg) {
    case "ec-p256":
      return { key_type: "ec", key_bits: 256 };
    case "ec-p384":
      return { key_type: "ec", key_bits: 384 };
    case "rsa-2048":
      return { key_type: "rsa", key_bits: 2048 };
    case "rsa-3072":
      return { key_type: "rsa", key_bits: 3072 };
    case "rsa-4096":
      return { key_type: "rsa", key_bits: 4096 };
    case "ed25519":
      return { key_type: "ed25519" };
  }
}

/**
 * Mints one intermediate. Vault failures become AuthorityUnavailableError (retry) or
 * AuthorityDeniedError (fix the policy or mount), named by step; `signal` cancels every
 * request (the rejection is then an AbortError).
 */
export async function mintIntermediate(
  client: VaultClient,
  o: MintIntermediateOptions,
  signal?: AbortSignal,
): Promise<MintedIntermediate> {
  const { mode, rootMount, intermediateMount, label } = o;
  const td = `spiffe://${o.trustDomain}`;
  const step = async <T>(what: string, fn: () => Promise<T>): Promise<T> => {
    try {
      return await fn();
    } catch (err) {
      if (signal?.aborted) throw err;
      throw toAuthorityError(err, `${label}: ${what}`);
    }
  };
  let csrPem: string;
  let key: KeyObject;
  if (mode === "csr") {
    key = (await generateKeyPairAsync(o.keyAlgorithm)).privateKey;
    csrPem = buildCsr(key, { subject: { commonName: o.commonName }, uris: [td], ca: true });
  } else {
    const path = `${intermediateMount}/intermediate/generate/exported`;
    const r = await step(`generating the key at ${path}`, () =>
      client.write<{ csr?: string; private_key?: string }>(
        path,
        { common_name: o.commonName, uri_sans: td, ...vaultKeyParams(o.keyAlgorithm) },
        { signal },
      ),
    );
    if (!r?.data?.csr || !r.data.private_key)
      throw new AuthorityUnavailableError(
        `${label}: ${path} answered without csr/private_key: is ${intermediateMount} a PKI mount (bao secrets enable -path=${intermediateMount} pki)?`,
      );
    csrPem = r.data.csr;
    try {
      key = createPrivateKey(r.data.private_key);
    } catch {
      throw new AuthorityUnavailableError(`${label}: ${path} returned an unreadable private key`);
    }
  }
  const issuer = o.rootIssuer;
  const signPath = issuer
    ? `${rootMount}/issuer/${issuer}/sign-intermediate`
    : `${rootMount}/root/sign-intermediate`;
  const issuedAt = Date.now();
  const signed = await step(`signing the intermediate at ${signPath}`, () =>
    client.write<{ certificate?: string; issuing_ca?: string; ca_chain?: string[] | null }>(
      signPath,
      {
        csr: csrPem,
        common_name: o.commonName,
        uri_sans: td,
        ttl: `${o.ttlSeconds}s`,
        // The intermediate signs leaves only.
        max_path_length: 0,
        use_csr_values: false,
        format: "pem",
      },
      { signal },
    ),
  );
  const d = signed?.data;
  if (!d?.certificate)
    throw new AuthorityUnavailableError(`${label}: ${signPath} answered without data.certificate`);
  let cert: Certificate;
  let chain: Certificate[];
  try {
    const first = parseAll([d.certificate], signPath)[0];
    if (!first) throw new Error("no certificate in data.certificate");
    cert = first;
    // Everything Vault sent but the certificate itself (parseAll drops duplicates).
    chain = parseAll([d.certificate, d.issuing_ca, ...(d.ca_chain ?? [])], `${signPath} ca_chain`).filter(
      (c) => Buffer.compare(Buffer.from(c.der), Buffer.from(cert.der)) !== 0,
    );
  } catch (err) {
    throw new AuthorityUnavailableError(
      `${label}: cannot parse what ${signPath} returned: ${(err as Error).message}`,
    );
  }
  const roots = await step(`reading the trust bundle of ${rootMount}`, () =>
    issuer ? readIssuerRoots(client, rootMount, issuer, signal) : readMountRoots(client, rootMount, signal),
  );
  let material: CaMaterial;
  try {
    material = loadCaMaterial({
      certPem: cert.pem,
      keyPem: key,
      chainPem: chain.map((c) => c.pem).join(""),
      rootPem: roots.map((c) => c.pem).join(""),
      source: `intermediate signed at ${signPath} on ${client.address}`,
    });
  } catch (err) {
    if (err instanceof CaMaterialError) throw new AuthorityUnavailableError(err.message, { cause: err });
    throw err;
  }
  if (mode === "exported" && o.setSigned) {
    const path = `${intermediateMount}/intermediate/set-signed`;
    // With the chain up to the root, so the mount's ca_chain leads to the trust bundle.
    await step(`storing the signed intermediate at ${path}`, () =>
      client.write(
        path,
        {
          certificate: [cert.pem, ...material.chain.slice(1).map((c) => c.pem), ...material.rootsPem].join(
            "",
          ),
        },
        { signal },
      ),
    );
  }
  return { material, key, issuedAt, notAfter: cert.notAfter.getTime() };
}
