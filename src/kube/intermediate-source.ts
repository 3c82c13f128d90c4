// Where `meshvault cacerts` gets an intermediate CA for istiod. Unlike the
// vault-intermediate authority (key kept in memory), here the key is the product:
// it goes into the `cacerts` Secret or the memory-backed directory next to istiod.
import { createPrivateKey, type KeyObject } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { loadCaMaterial, type CaMaterial } from "../authority/ca-material.js";
import { LocalAuthority } from "../authority/local.js";
import { parseAll, readMountRoots } from "../authority/vault/common.js";
import { parseCertificate, type Certificate } from "../pki/certificate.js";
import { buildCsr } from "../pki/csr.js";
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

export interface IntermediateSource {
  readonly description: string;
  issueIntermediate(): Promise<IssuedIntermediate>;
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

  async issueIntermediate(): Promise<IssuedIntermediate> {
    const local = new LocalAuthority({ dataDir: this.o.dataDir, trustDomain: this.o.trustDomain });
    await local.start(); // creates the root on first use
    await local.close();
    const dir = join(this.o.dataDir, "local-ca");
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

export interface VaultSourceOptions {
  client: VaultClient;
  trustDomain: string;
  /** csr: key made here; exported: made by Vault at `<intermediateMount>/intermediate/generate/exported`. */
  mode: "csr" | "exported";
  rootMount: string;
  intermediateMount: string;
  ttlSeconds: number;
  keyAlgorithm: KeyAlgorithm;
  commonName?: string;
  /** Called on close (e.g. stop the token manager). */
  onClose?: () => void;
}

function vaultKeyParams(alg: KeyAlgorithm): { key_type: string; key_bits?: number } {
  if (alg === "ed25519") return { key_type: "ed25519" };
  const [type, bits] = alg.split("-") as [string, string];
  return { key_type: type, key_bits: Number(bits.replace(/^p/, "")) };
}

/**
 * Seeds 002/003 without cert-manager or Gloo: `<rootMount>/root/sign-intermediate` signs a
 * CSR whose key we made (csr) or Vault made at the intermediate mount (exported).
 */
export class VaultIntermediateSource implements IntermediateSource {
  readonly description: string;
  private readonly commonName: string;

  constructor(private readonly o: VaultSourceOptions) {
    this.description = `Vault at ${o.client.address}, ${o.rootMount}/root/sign-intermediate (${o.mode})`;
    this.commonName = o.commonName ?? `istiod intermediate CA (${o.trustDomain})`;
  }

  private async step<T>(what: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      throw new IntermediateSourceError(
        `${what} on Vault at ${this.o.client.address}: ${(err as Error).message}`,
        {
          cause: err,
        },
      );
    }
  }

  async issueIntermediate(): Promise<IssuedIntermediate> {
    const { mode, rootMount, intermediateMount, client } = this.o;
    const td = `spiffe://${this.o.trustDomain}`;
    let key: KeyObject;
    let csr: string;
    if (mode === "csr") {
      key = (await generateKeyPairAsync(this.o.keyAlgorithm)).privateKey;
      csr = buildCsr(key, { subject: { commonName: this.commonName }, uris: [td], ca: true });
    } else {
      const path = `${intermediateMount}/intermediate/generate/exported`;
      const r = await this.step(`generating a key at ${path}`, () =>
        client.write<{ csr?: string; private_key?: string }>(path, {
          common_name: this.commonName,
          uri_sans: td,
          ...vaultKeyParams(this.o.keyAlgorithm),
        }),
      );
      if (!r?.data?.csr || !r.data.private_key)
        throw new IntermediateSourceError(
          `${path} answered without csr/private_key: is ${intermediateMount} a PKI mount (bao secrets enable -path=${intermediateMount} pki)?`,
        );
      csr = r.data.csr;
      key = createPrivateKey(r.data.private_key);
    }
    const signPath = `${rootMount}/root/sign-intermediate`;
    const signed = await this.step(`signing the intermediate at ${signPath}`, () =>
      client.write<{ certificate?: string; issuing_ca?: string; ca_chain?: string[] | null }>(signPath, {
        csr,
        common_name: this.commonName,
        uri_sans: td,
        ttl: `${this.o.ttlSeconds}s`,
        // istiod signs workload leaves only.
        max_path_length: 0,
        use_csr_values: false,
        format: "pem",
      }),
    );
    const d = signed?.data;
    if (!d?.certificate) throw new IntermediateSourceError(`${signPath} answered without data.certificate`);
    const certs = parseAll([d.certificate, d.issuing_ca, ...(d.ca_chain ?? [])], signPath);
    const cert = certs[0]!;
    const roots = await this.step(`reading the roots of ${rootMount}`, () =>
      readMountRoots(client, rootMount),
    );
    try {
      return toIssued(cert, key, certs.slice(1), roots, `intermediate signed at ${signPath}`);
    } catch (err) {
      throw new IntermediateSourceError((err as Error).message, { cause: err });
    }
  }

  async close(): Promise<void> {
    this.o.onClose?.();
  }
}
