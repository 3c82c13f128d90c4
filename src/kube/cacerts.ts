// `meshvault cacerts`: keeps istiod's plug-in CA (ca-cert.pem, ca-key.pem,
// cert-chain.pem, root-cert.pem) filled with an intermediate from Vault and renews
// it before expiry: what cert-manager does in seed 002 and Gloo's istiod-agent in
// seed 003. What is already there is kept while valid and not yet due, so a
// restarted sidecar or a re-run job does not churn istiod's CA.
import { loadCaMaterial } from "../authority/ca-material.js";
import { layoutFiles, type CaCertsFiles, type CaCertsSink, type WriteResult } from "./cacerts-sinks.js";
import type { IntermediateSource, IssuerChoice } from "./intermediate-source.js";
import { RenewalLoop } from "../timing/renewal-loop.js";
import type { Log } from "../log/logger.js";
import { joinPem } from "../pki/pem.js";

/**
 * What a root rotation asks of istiod's plug-in CA now (rotation/cacerts-plan.ts maps the
 * rotation state to it): stock istiod reads root-cert.pem as its trust bundle.
 */
export interface CaCertsRootPlan {
  /** Changes whenever the plan does (rotation id and phase): the runner syncs again on a change. */
  key: string;
  /** root-cert.pem (and ca.crt) hold exactly these roots (PEM each); undefined: the source's own. */
  bundle?: string[] | undefined;
  /** The intermediate must chain to this root; the source is asked for one under it. */
  under?: (IssuerChoice & { rootPem: string }) | undefined;
}

export interface CaCertsRotation {
  /** The plan now; the provider keeps its last answer when it cannot read the rotation state. */
  plan(): Promise<CaCertsRootPlan>;
  /** How often the long-running form checks for a new plan. */
  pollMs: number;
}

export interface CaCertsOptions {
  source: IntermediateSource;
  /** Follow a root rotation (`meshvault root rotate`): bundle old + new, then the new root's intermediate. */
  rotation?: CaCertsRotation;
  sink: CaCertsSink;
  /** Also write tls.crt / tls.key / ca.crt. */
  tlsLayout?: boolean;
  /** Renew when this fraction of the lifetime has passed (default 0.5: seed 002's 360h of 720h). */
  renewAt?: number;
  /** `log.child({ component: "cacerts" })` from the command's logger. */
  log?: Log;
  /** Backoff between failed attempts (default 1 s .. 5 min). */
  retryMinMs?: number;
  retryMaxMs?: number;
}

export interface CaCertsState {
  notAfter: Date;
  renewAt: Date;
  /** Intermediates issued by this process. */
  issued: number;
  failures: number;
  lastError?: string;
}

export interface SyncResult {
  action: "issued" | "kept";
  /** The rotation plan applied (CaCertsRootPlan.key), when following one. */
  plan?: string;
  write: WriteResult;
  notAfter: Date;
  renewAt: Date;
}

interface Present {
  notBefore: Date;
  notAfter: Date;
}

/** The sink's current material when it is complete and consistent; undefined otherwise. */
function validPresent(files: CaCertsFiles | undefined): Present | undefined {
  const cert = files?.["ca-cert.pem"];
  const key = files?.["ca-key.pem"];
  if (!cert || !key) return undefined;
  try {
    const m = loadCaMaterial({
      certPem: cert,
      keyPem: key,
      chainPem: files["cert-chain.pem"],
      rootPem: files["root-cert.pem"],
      source: "existing cacerts",
    });
    return { notBefore: m.signer.cert.notBefore, notAfter: m.signer.cert.notAfter };
  } catch {
    return undefined;
  }
}

function dueAt(p: Present, renewAt: number): Date {
  const nb = p.notBefore.getTime();
  return new Date(nb + renewAt * (p.notAfter.getTime() - nb));
}

/** Whether `files`' CA certificate chains to `rootPem` (through cert-chain.pem). */
function chainsTo(files: CaCertsFiles, rootPem: string): boolean {
  try {
    loadCaMaterial({
      certPem: files["ca-cert.pem"]!,
      keyPem: files["ca-key.pem"]!,
      chainPem: files["cert-chain.pem"],
      rootPem,
      source: "existing cacerts",
    });
    return true;
  } catch {
    return false;
  }
}

/** One pass: keep what is there if valid, not due and under the planned root, else issue and write. */
export async function syncCaCerts(o: CaCertsOptions, signal?: AbortSignal): Promise<SyncResult> {
  const renewAt = o.renewAt ?? 0.5;
  const tls = o.tlsLayout ?? false;
  const plan = await o.rotation?.plan();
  const bundle = plan?.bundle ? joinPem(plan.bundle) : undefined;
  const existing = await o.sink.read();
  const present = validPresent(existing);
  const underPlan = !plan?.under || (existing !== undefined && chainsTo(existing, plan.under.rootPem));
  if (existing && present && underPlan && Date.now() < dueAt(present, renewAt).getTime()) {
    // Same material; only the layout (e.g. --tls-layout added) or a rotation's bundle may change.
    const same = {
      caCertPem: existing["ca-cert.pem"]!,
      caKeyPem: existing["ca-key.pem"]!,
      certChainPem: existing["cert-chain.pem"] ?? existing["ca-cert.pem"]!,
      rootCertPem: bundle ?? existing["root-cert.pem"] ?? "",
      ...present,
    };
    const write = same.rootCertPem ? await o.sink.write(layoutFiles(same, tls)) : "unchanged";
    return {
      action: "kept",
      write,
      notAfter: present.notAfter,
      renewAt: dueAt(present, renewAt),
      ...(plan ? { plan: plan.key } : {}),
    };
  }
  if (existing && !present)
    o.log?.warn(
      { sink: o.sink.description },
      "the plug-in CA holds an incomplete or inconsistent CA: replacing it",
    );
  else if (existing && !underPlan)
    o.log?.info(
      { sink: o.sink.description, rotation: plan?.key },
      "root rotation: replacing the intermediate with one under the new root",
    );
  const issuedAt = new Date();
  let issued = await o.source.issueIntermediate(signal, plan?.under);
  if (bundle) issued = { ...issued, rootCertPem: bundle };
  if (plan?.under && !chainsTo(layoutFiles(issued, false), plan.under.rootPem))
    throw new Error(
      `${o.source.description} gave an intermediate that does not chain to root rotation ${plan.key}'s new root: check the rotation state (meshvault root status)`,
    );
  const write = await o.sink.write(layoutFiles(issued, tls));
  // Count the lifetime from now, not from notBefore: CAs backdate notBefore (Vault 30 s,
  // meshvault 2 min), which for a short TTL would make the new intermediate due at once.
  const p = {
    notBefore: issued.notBefore > issuedAt ? issued.notBefore : issuedAt,
    notAfter: issued.notAfter,
  };
  return {
    action: "issued",
    write,
    notAfter: issued.notAfter,
    renewAt: dueAt(p, renewAt),
    ...(plan ? { plan: plan.key } : {}),
  };
}

export interface CaCertsRunner {
  state(): CaCertsState | undefined;
  /** Resolves after the first successful pass (rejects only if stopped before one). */
  ready: Promise<SyncResult>;
  stop(): Promise<void>;
}

/** Long-running: a pass now, then one at each renewal time; failures retry with backoff. */
export function runCaCerts(o: CaCertsOptions): CaCertsRunner {
  let issued = 0;
  const loop = new RenewalLoop<SyncResult>({
    what: "cacerts",
    renew: (signal) => syncCaCerts(o, signal),
    validity: (r) => ({ until: r.notAfter.getTime(), renewAt: r.renewAt.getTime() }),
    backoff: { initialMs: o.retryMinMs ?? 1000, maxMs: o.retryMaxMs ?? 300_000 },
    // `meshvault cacerts` has nothing else keeping it alive between renewals.
    keepAlive: true,
    ...(o.log ? { log: o.log } : {}),
    onRenewed: (r) => {
      if (r.action === "issued") issued++;
      o.log?.info(
        {
          sink: o.sink.description,
          ...(r.action === "issued" ? { source: o.source.description } : {}),
          write: r.write,
          ...(r.plan ? { rotation: r.plan } : {}),
          notAfter: r.notAfter.toISOString(),
          renewAt: r.renewAt.toISOString(),
        },
        r.action === "issued" ? "new intermediate" : "current intermediate kept",
      );
    },
  });
  const ready = loop.ready();
  ready.catch(() => {});
  loop.start();
  // A rotation moves on between renewals: sync again as soon as its plan changes.
  const poll = o.rotation
    ? setInterval(() => {
        void o.rotation!.plan().then(
          (p) => {
            const cur = loop.current;
            if (!cur || p.key === cur.plan) return;
            o.log?.info(
              { sink: o.sink.description, rotation: p.key },
              "root rotation moved on: syncing the plug-in CA",
            );
            void loop.renewNow().catch(() => undefined);
          },
          () => undefined,
        );
      }, o.rotation.pollMs)
    : undefined;
  poll?.unref();
  return {
    state: () => {
      const r = loop.current;
      if (!r) return undefined;
      const st = loop.status();
      return {
        notAfter: r.notAfter,
        renewAt: r.renewAt,
        issued,
        failures: st.failures,
        ...(st.lastError !== undefined ? { lastError: st.lastError } : {}),
      };
    },
    ready,
    stop: () => {
      if (poll) clearInterval(poll);
      return loop.stop();
    },
  };
}
