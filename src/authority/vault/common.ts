// What the three Vault-backed authorities share: Vault errors turned into the
// authority errors the CA service maps to gRPC codes, the trust bundle read from
// a PKI mount (roots only), and PEM set arithmetic.
import {
  parseCertificates,
  describeCertificate,
  isSelfSigned,
  type Certificate,
} from "../../pki/certificate.js";
import { verifyChain } from "../../pki/chain.js";
import {
  VaultAuthError,
  VaultBadRequestError,
  VaultError,
  VaultPermissionDeniedError,
  type VaultClient,
} from "../../vault/index.js";
import { silentLog, type Log } from "../../log/logger.js";
import { AuthorityDeniedError, AuthorityUnavailableError } from "../authority.js";

/** The Vault authorities log in the one shape (`log.child({ component })` from the server's logger). */
export type VaultAuthorityLog = Log;
export { silentLog };

/**
 * Vault failure -> authority failure. Unavailable (connection, sealed, 5xx, 429) becomes
 * AuthorityUnavailableError so clients retry; refusals (403, 400, failed login) become
 * AuthorityDeniedError. `what` says what we were doing, e.g. `Vault role "x" at pki_int`.
 * VaultClient messages already name the path and never carry tokens.
 */
export function toAuthorityError(err: unknown, what: string): Error {
  if (!(err instanceof VaultError)) return err instanceof Error ? err : new Error(String(err));
  if (err.unavailable || err.retryable) {
    return new AuthorityUnavailableError(`${what}: ${err.message}`, { cause: err });
  }
  if (err instanceof VaultBadRequestError) {
    // The role's complaint verbatim: that is what the operator has to fix.
    const said = err.vaultErrors.length ? err.vaultErrors.join("; ") : err.message;
    return new AuthorityDeniedError(`${what} refused the request: ${said}`, { cause: err });
  }
  if (err instanceof VaultPermissionDeniedError || err instanceof VaultAuthError) {
    return new AuthorityDeniedError(`${what}: ${err.message}`, { cause: err });
  }
  return new AuthorityDeniedError(`${what}: ${err.message}`, { cause: err });
}

export function certKey(c: Certificate): string {
  return Buffer.from(c.der).toString("base64");
}

/** Unique certificates in order of first appearance. */
export function dedupe(certs: readonly Certificate[]): Certificate[] {
  const seen = new Set<string>();
  return certs.filter((c) => {
    const k = certKey(c);
    if (seen.has(k)) return false;
    seen.add(k);
    return true;
  });
}

/** Parses every certificate in each PEM text (a field may itself be a bundle). */
export function parseAll(texts: readonly (string | undefined | null)[], what: string): Certificate[] {
  const out: Certificate[] = [];
  for (const t of texts) if (t && t.includes("-----BEGIN")) out.push(...parseCertificates(t, what));
  return dedupe(out);
}

/**
 * Throws naming `field` (the configuration field) when no PKI engine is mounted at `mount`.
 * A PKI mount serves `ca_chain` to anyone; Vault refuses an unauthenticated request to a path
 * where nothing is mounted (403), so a typo in the mount is not mistaken for a missing policy.
 */
export async function checkPkiMount(
  client: VaultClient,
  mount: string,
  field: string,
  signal?: AbortSignal,
): Promise<void> {
  const raw = await client.requestRaw("GET", `${mount}/ca_chain`, undefined, {
    noAuth: true,
    acceptStatus: [204, 403, 404],
    signal,
  });
  if (raw.status !== 403 && raw.status !== 404) return;
  throw new AuthorityDeniedError(
    `no PKI secrets engine is mounted at "${mount}" (${field}) on Vault at ${client.address}: Vault refused ` +
      `GET ${mount}/ca_chain, which a PKI mount serves to anyone. Set ${field} to the mount that holds the CA ` +
      `(bao secrets list), or enable PKI there (bao secrets enable -path=${mount} pki)`,
  );
}

/**
 * The mount's CA chain as Vault publishes it (`GET <mount>/ca_chain`, unauthenticated,
 * PEM), falling back to every issuer of the mount (`LIST <mount>/issuers` +
 * `GET <mount>/issuer/<id>/json`) when the default issuer's chain stops short of a root.
 */
export async function readMountChain(
  client: VaultClient,
  mount: string,
  signal?: AbortSignal,
): Promise<Certificate[]> {
  const raw = await client.requestRaw("GET", `${mount}/ca_chain`, undefined, {
    noAuth: true,
    acceptStatus: [204],
    signal,
  });
  let certs = raw.status === 204 ? [] : parseAll([raw.body], `${mount}/ca_chain`);
  if (certs.some(isSelfSigned)) return certs;
  const ids = await client.list(`${mount}/issuers`, { noAuth: true, signal }).catch((e: unknown) => {
    if (signal?.aborted) throw e;
    return [] as string[];
  });
  for (const id of ids) {
    const r = await client.read<{ certificate?: string; ca_chain?: string[] }>(`${mount}/issuer/${id}/json`, {
      noAuth: true,
      signal,
    });
    certs = dedupe([
      ...certs,
      ...parseAll([r?.data?.certificate, ...(r?.data?.ca_chain ?? [])], `${mount}/issuer/${id}`),
    ]);
  }
  return certs;
}

/** Self-signed certificates of the mount: the trust bundle. Throws naming the mount and the fix when there is none. */
export async function readMountRoots(
  client: VaultClient,
  mount: string,
  signal?: AbortSignal,
): Promise<Certificate[]> {
  const certs = await readMountChain(client, mount, signal);
  const roots = certs.filter(isSelfSigned);
  if (roots.length === 0) {
    throw new AuthorityDeniedError(
      certs.length === 0
        ? `no CA at ${mount} on Vault at ${client.address}: ${mount}/ca_chain and ${mount}/issuers are empty. ` +
            `Generate or import a CA there (meshvault vault setup, or bao write ${mount}/root/generate/internal)`
        : `no root certificate at ${mount} on Vault at ${client.address}: its chain (${certs.map(describeCertificate).join("; ")}) ` +
            `does not include a self-signed root. Import the intermediate together with its root ` +
            `(bao write ${mount}/intermediate/set-signed certificate=@intermediate-and-root.pem) so peers can be given a trust bundle`,
    );
  }
  return roots;
}

/** The self-signed certificate of one issuer of a mount (`GET <mount>/issuer/<ref>/json`). */
export async function readIssuerRoots(
  client: VaultClient,
  mount: string,
  issuer: string,
  signal?: AbortSignal,
): Promise<Certificate[]> {
  const r = await client.read<{ certificate?: string }>(`${mount}/issuer/${issuer}/json`, {
    noAuth: true,
    signal,
  });
  const roots = parseAll([r?.data?.certificate], `${mount}/issuer/${issuer}`).filter(isSelfSigned);
  if (roots.length === 0)
    throw new AuthorityDeniedError(
      `issuer ${issuer} of ${mount} on Vault at ${client.address} is not a root (or does not exist): check \`bao list ${mount}/issuers\``,
    );
  return roots;
}

/**
 * Checks that `leaf` chains through `intermediates` to `roots`; the ChainError names the
 * certificate that does not chain. Returns the intermediates actually on the path (no root).
 */
export function checkIssued(
  leaf: Certificate,
  intermediates: readonly Certificate[],
  roots: readonly Certificate[],
  source: string,
): Certificate[] {
  const rootKeys = new Set(roots.map(certKey));
  const pool = intermediates.filter((c) => !rootKeys.has(certKey(c)));
  try {
    const path = verifyChain(leaf, pool, roots);
    return path.slice(1).filter((c) => !rootKeys.has(certKey(c)));
  } catch (err) {
    throw new AuthorityUnavailableError(
      `${source}: the chain Vault returned does not reach the trust bundle (${roots.map(describeCertificate).join("; ")}): ` +
        `${(err as Error).message}. Check that the mount's CA was issued by the configured root`,
      { cause: err },
    );
  }
}
