// Where `meshvault cacerts` gets an intermediate CA for istiod. Unlike the
// vault-intermediate authority (key kept in memory), here the key is the product:
// it goes into the `cacerts` Secret or the memory-backed directory next to istiod.
import { createPrivateKey, type KeyObject } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { loadCaMaterial, type CaMaterial } from "../authority/ca-material.js";
import { LocalAuthority } from "../authority/local.js";
import { checkPkiMount } from "../authority/vault/common.js";
import {
  mintIntermediate,
  mintMounts,
  type MintIntermediateOptions,
} from "../authority/vault/mint-intermediate.js";
import { parseCertificate, type Certificate } from "../pki/certificate.js";
import { createSigner, issueCa } from "../pki/issue.js";
import { fitCommonName } from "../pki/name.js";
import { generateKeyPairAsync, privateKeyPem, type KeyAlgorithm } from "../pki/keys.js";
import { joinPem } from "../pki/pem.js";
import type { VaultClient } from "../vault/index.js";

/** An intermediate CA in Istio's plug-in CA terms. */
export interface IssuedIntermediate {
  caCertPem: string;
  caKeyPem: string;
  /** The CA certificate, any intermediates above it, and the root. */
  certChainPem: string;
  rootCertPem: string;
  notBefore: Date;
  notAfter: Date;
}

/** Which root signs (a root rotation's new one); default the source's own. */
export interface IssuerChoice {
  /** Vault: this issuer of the root mount. */
  vaultIssuer?: string | undefined;
  /** Local: this CA directory under the data directory (while it exists; promoted to local-ca at retire). */
  localDir?: string | undefined;
}

export interface IntermediateSource {
  readonly description: string;
  /** `signal` cancels the requests of a source that talks to Vault. */
  issueIntermediate(signal?: AbortSignal, issuer?: IssuerChoice): Promise<IssuedIntermediate>;
  close(): Promise<void>;
}

export class IntermediateSourceError extends Error {
  override name = "IntermediateSourceError";
}

/** Validates (key matches, chain reaches the root) and lays out the files. */
export function toIssued(
  cert: Certificate,
  key: KeyObject,
  chain: readonly Certificate[],
  roots: readonly Certificate[],
  source: string,
): IssuedIntermediate {
  const material: CaMaterial = loadCaMaterial({
    certPem: cert.pem,
    keyPem: key,
    chainPem: chain.map((c) => c.pem).join(""),
    rootPem: roots.map((c) => c.pem).join(""),
    source,
  });
  return pluginCaFiles(material, key);
}

/** Checked CA material in Istio's plug-in CA layout. */
export function pluginCaFiles(material: CaMaterial, key: KeyObject): IssuedIntermediate {
  // The root this intermediate chains to goes last in cert-chain.pem; root-cert.pem carries
  // every root of the mount, so a root rotation there reaches istiod's trust bundle.
  const top = material.chain.at(-1) ?? material.signer.cert;
  const issuerRoot =
    material.roots.find((r) => Buffer.compare(Buffer.from(r.subjectRaw), Buffer.from(top.issuerRaw)) === 0) ??
    material.roots[0]!;
  return {
    caCertPem: material.signer.cert.pem,
    caKeyPem: privateKeyPem(key),
    certChainPem: joinPem([...material.intermediatesPem, issuerRoot.pem]),
    rootCertPem: joinPem(material.rootsPem),
    notBefore: material.signer.cert.notBefore,
    notAfter: material.signer.cert.notAfter,
  };
}

export interface LocalSourceOptions {
  /** Data directory of the embedded local CA (its root is created there if missing). */
  dataDir: string;
  trustDomain: string;
  ttlSeconds: number;
  keyAlgorithm?: KeyAlgorithm;
  commonName?: string;
}

/** Intermediates from meshvault's embedded local root: for trying the shape without Vault. */
export class LocalIntermediateSource implements IntermediateSource {
  readonly description: string;
  constructor(private readonly o: LocalSourceOptions) {
    this.description = `local root CA in ${join(o.dataDir, "local-ca")}`;
  }

  async issueIntermediate(_signal?: AbortSignal, issuer?: IssuerChoice): Promise<IssuedIntermediate> {
    // A rotation's new CA directory, until the retire step promotes it to local-ca.
    const dirName =
      issuer?.localDir && existsSync(join(this.o.dataDir, issuer.localDir)) ? issuer.localDir : "local-ca";
    const local = new LocalAuthority({ dataDir: this.o.dataDir, trustDomain: this.o.trustDomain, dirName });
    await local.start(); // creates the root on first use
    await local.close();
    const dir = join(this.o.dataDir, dirName);
    const root = parseCertificate(readFileSync(join(dir, "root-cert.pem"), "utf8"), "local root certificate");
    const signer = createSigner(root, createPrivateKey(readFileSync(join(dir, "root-key.pem"), "utf8")));
    const pair = await generateKeyPairAsync(this.o.keyAlgorithm ?? "ec-p256");
    const issued = issueCa(
      {
        subject: {
          organization: "meshvault",
          commonName: this.o.commonName ?? fitCommonName("istiod intermediate CA", this.o.trustDomain),
        },
        key: pair.publicKey,
        ttlSeconds: this.o.ttlSeconds,
        pathLen: 0,
        uris: [`spiffe://${this.o.trustDomain}`],
      },
      signer,
    );
    return toIssued(parseCertificate(issued.pem), pair.privateKey, [], [root], this.description);
  }

  async close(): Promise<void> {}
}

/** `meshvault cacerts`' flag, or the server config field it falls back to, for each mount. */
const CACERTS_MOUNT_FIELDS = (setting: "rootMount" | "intermediateMount"): string =>
  setting === "rootMount"
    ? "--root-mount / authority.rootMount"
    : "--intermediate-mount / authority.intermediateMount";

/** The mint's settings (mint-intermediate.ts) plus the client and what to close with it. */
export type VaultSourceOptions = Pick<
  MintIntermediateOptions,
  "trustDomain" | "mode" | "rootMount" | "intermediateMount" | "ttlSeconds" | "keyAlgorithm"
> & {
  client: VaultClient;
  commonName?: string | undefined;
  /** Called on close (e.g. stop the token manager). */
  onClose?: () => void | Promise<void>;
};

/**
 * Seeds 002/003 without cert-manager or Gloo: `<rootMount>/root/sign-intermediate` signs a
 * CSR whose key we made (csr) or Vault made at the intermediate mount (exported).
 */
export class VaultIntermediateSource implements IntermediateSource {
  readonly description: string;
  private readonly commonName: string;
  private mountsChecked = false;

  constructor(private readonly o: VaultSourceOptions) {
    this.description = `Vault at ${o.client.address}, ${o.rootMount}/root/sign-intermediate (${o.mode})`;
    this.commonName = o.commonName ?? `istiod intermediate CA (${o.trustDomain})`;
  }

  /**
   * mintIntermediate without set-signed: here the key is handed to istiod, which is the
   * issuer (see mint-intermediate.ts for why the mount is not told).
   */
  async issueIntermediate(signal?: AbortSignal, issuer?: IssuerChoice): Promise<IssuedIntermediate> {
    const { client, mode } = this.o;
    try {
      // A mistyped mount would otherwise read as a missing policy (Vault answers 403 for both).
      if (!this.mountsChecked) {
        for (const [mount, field] of mintMounts(this.o, CACERTS_MOUNT_FIELDS))
          await checkPkiMount(client, mount, field, signal);
        this.mountsChecked = true;
      }
      const m = await mintIntermediate(
        client,
        {
          ...this.o,
          commonName: this.commonName,
          setSigned: false,
          label: `cacerts (${mode}) from Vault at ${client.address}`,
          rootIssuer: issuer?.vaultIssuer,
        },
        signal,
      );
      return pluginCaFiles(m.material, m.key);
    } catch (err) {
      if (signal?.aborted) throw err;
      throw new IntermediateSourceError((err as Error).message, { cause: err });
    }
  }

  async close(): Promise<void> {
    await this.o.onClose?.();
  }
}
