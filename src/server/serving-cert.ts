// The CA server's own TLS certificate, issued by its authority like any workload's,
// with DNS SANs so istio-agent can verify `istiod.istio-system.svc`; renewed at half life.
import { generateKeyPairFor, privateKeyPem } from "../pki/keys.js";
import { buildCsr, parseCsr } from "../pki/csr.js";
import { parseCertificate } from "../pki/certificate.js";
import { workloadId } from "../pki/spiffe.js";
import type { Authority } from "../authority/authority.js";
import type { Logger } from "../log/logger.js";

export interface ServingCert {
  certChainPem: string;
  keyPem: string;
  notAfter: Date;
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
  };
}

/** Keeps the serving certificate fresh; returns a stop function. */
export function keepServingCertFresh(o: ServingCertOptions, first: ServingCert): () => void {
  let timer: NodeJS.Timeout | undefined;
  let stopped = false;
  const schedule = (cert: ServingCert, delayOverride?: number): void => {
    if (stopped) return;
    const left = cert.notAfter.getTime() - Date.now();
    const delay = delayOverride ?? Math.max(1000, left / 2);
    timer = setTimeout(() => void renew(cert), Math.min(delay, 2 ** 31 - 1));
    timer.unref();
  };
  const renew = async (prev: ServingCert): Promise<void> => {
    try {
      const next = await issueServingCert(o);
      o.onRenew(next);
      o.log.info({ notAfter: next.notAfter.toISOString() }, "renewed the CA server's TLS certificate");
      schedule(next);
    } catch (err) {
      o.log.error(
        { err: (err as Error).message },
        "cannot renew the CA server's TLS certificate; retrying in 30s",
      );
      schedule(prev, 30_000);
    }
  };
  schedule(first);
  return () => {
    stopped = true;
    if (timer) clearTimeout(timer);
  };
}
