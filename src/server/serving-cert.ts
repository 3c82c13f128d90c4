// The CA server's own TLS certificate, issued by its authority like any workload's,
// with DNS SANs so istio-agent can verify `istiod.istio-system.svc`; renewed at half life.
import { generateKeyPairFor, privateKeyPem } from "../pki/keys.js";
import { buildCsr, parseCsr } from "../pki/csr.js";
import { parseCertificate } from "../pki/certificate.js";
import { workloadId } from "../pki/spiffe.js";
import type { Authority } from "../authority/authority.js";
import type { Logger } from "../log/logger.js";
import { RenewalLoop } from "../timing/renewal-loop.js";

export interface ServingCert {
  certChainPem: string;
  keyPem: string;
  notAfter: Date;
  /** When it arrived: its lifetime for renewal counts from here (CAs backdate notBefore). */
  receivedAt: Date;
}

export interface ServingCertOptions {
  authority: Authority;
  trustDomain: string;
  namespace: string;
  serviceAccount: string;
  dnsNames: string[];
  ipAddresses: string[];
  ttlSeconds: number;
  log: Logger;
  onRenew(cert: ServingCert): void;
}

export async function issueServingCert(o: ServingCertOptions): Promise<ServingCert> {
  const key = generateKeyPairFor("ec-p256");
  const csr = parseCsr(buildCsr(key.privateKey, {}));
  const issued = await o.authority.sign(
    { csr, ttlSeconds: o.ttlSeconds, dnsNames: o.dnsNames, ipAddresses: o.ipAddresses },
    workloadId(o.trustDomain, o.namespace, o.serviceAccount),
  );
  return {
    certChainPem: [issued.leafPem, ...issued.intermediatesPem].join(""),
    keyPem: privateKeyPem(key.privateKey),
    notAfter: parseCertificate(issued.leafPem).notAfter,
    receivedAt: new Date(),
  };
}

/** Keeps the serving certificate fresh (renewed at half life, backoff on failure); returns a stop function. */
export function keepServingCertFresh(o: ServingCertOptions, first: ServingCert): () => Promise<void> {
  const loop = new RenewalLoop<ServingCert>({
    what: "the CA server's TLS certificate",
    renew: () => issueServingCert(o),
    validity: (c) => ({ from: c.receivedAt.getTime(), until: c.notAfter.getTime() }),
    renewAt: 0.5,
    backoff: { initialMs: 1000, maxMs: 30_000 },
    log: o.log,
    onRenewed: (next) => {
      o.onRenew(next);
      o.log.info({ notAfter: next.notAfter.toISOString() }, "renewed the CA server's TLS certificate");
    },
  });
  loop.start(first);
  return () => loop.stop();
}
