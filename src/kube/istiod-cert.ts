// istiod's own XDS serving certificate when meshvault is the mesh CA. With
// ENABLE_CA_SERVER=false istiod still serves XDS over TLS on 15012, and sidecars verify
// it against the mesh root; istiod loads that certificate from the optional Secret
// `istiod-tls` (tls.crt, tls.key, ca.crt, mounted at /var/run/secrets/istiod/tls), which
// istio-csr writes in cert-manager setups. This writer does the same with the server's
// own authority: a key generated in memory, a certificate with istiod's DNS names and
// SPIFFE ID, renewed at half life, kept while fresh (no churn: istiod reloads on every
// change), and put back when someone edits or deletes the Secret.
//
// Only the holder of a Lease writes, so every server replica can run it.
import { createPrivateKey, type KeyObject } from "node:crypto";
import { CoreV1Api, type KubeConfig, type V1Secret } from "@kubernetes/client-node";
import type { Authority } from "../authority/authority.js";
import { buildCsr, parseCsr } from "../pki/csr.js";
import { parseCertificates, type Certificate } from "../pki/certificate.js";
import { verifyChain } from "../pki/chain.js";
import { generateKeyPairFor, privateKeyMatches, privateKeyPem } from "../pki/keys.js";
import { workloadId } from "../pki/spiffe.js";
import { DEFAULT_ISTIOD_DNS_NAMES } from "./config-schema.js";
import { describeKubeError, forbiddenHint, statusOf } from "./client.js";
import { LeaderElector } from "./leader-election.js";
import { MANAGED_BY_LABEL } from "./root-publisher.js";
import { RenewalLoop } from "../timing/renewal-loop.js";
import type { Log } from "../log/logger.js";

export const ISTIOD_TLS_SECRET = "istiod-tls";
export const TLS_SECRET_TYPE = "kubernetes.io/tls";
export { DEFAULT_ISTIOD_DNS_NAMES };
export const DEFAULT_ISTIOD_LEASE = "meshvault-istiod-cert";
const KEYS = ["tls.crt", "tls.key", "ca.crt"] as const;

export interface IstiodCertOptions {
  kubeConfig: KubeConfig;
  authority: Pick<Authority, "sign" | "trustBundle">;
  trustDomain: string;
  /** istiod's namespace: where the Secret lives and the SPIFFE ID's namespace. */
  namespace: string;
  secretName?: string;
  /** istiod's service account, for the SPIFFE ID. */
  serviceAccount: string;
  dnsNames: string[];
  ttlSeconds: number;
  /** How often the Secret is re-read to repair edits and deletions (default 30 s). */
  checkPeriodMs?: number;
  /** Backoff between failed passes (default 1 s .. 5 min). */
  retryMinMs?: number;
  retryMaxMs?: number;
  /** `log.child({ component })` from the server's logger. */
  log?: Log;
}

export interface IstiodCertStats {
  /** Certificates issued by this process. */
  issued: number;
  created: number;
  updated: number;
  unchanged: number;
  errors: number;
}

export interface IstiodCertPass {
  action: "issued" | "kept";
  write: "created" | "updated" | "unchanged";
  notAfter: Date;
  renewAt: Date;
}

export class IstiodCertError extends Error {
  override name = "IstiodCertError";
}

type Files = Record<(typeof KEYS)[number], string>;

function decode(s: V1Secret): Partial<Files> {
  const out: Partial<Files> = {};
  for (const k of KEYS) {
    const v = s.data?.[k];
    if (v !== undefined) out[k] = Buffer.from(v, "base64").toString("utf8");
  }
  return out;
}

function sortedEqual(a: readonly string[], b: readonly string[]): boolean {
  const sb = [...b].sort();
  return a.length === b.length && [...a].sort().every((x, i) => x === sb[i]);
}

/**
 * Renewal time: half the lifetime, measured against the configured TTL rather than
 * notBefore (CAs backdate notBefore by minutes, which for a short TTL would make a new
 * certificate due at once), and against the real lifetime when the CA capped it.
 */
function dueAt(leaf: Certificate, ttlSeconds: number): Date {
  const life = Math.min(ttlSeconds * 1000, leaf.notAfter.getTime() - leaf.notBefore.getTime());
  return new Date(leaf.notAfter.getTime() - life / 2);
}

/** One writer; `pass()` makes the Secret right once. The elected loop is startIstiodCertWriter. */
export class IstiodCertWriter {
  readonly stats: IstiodCertStats = { issued: 0, created: 0, updated: 0, unchanged: 0, errors: 0 };
  readonly description: string;
  /** `namespace/name`, the field logs carry. */
  readonly secret: string;
  private readonly api: CoreV1Api;
  private readonly name: string;
  private readonly spiffe: string;

  constructor(private readonly o: IstiodCertOptions) {
    this.api = o.kubeConfig.makeApiClient(CoreV1Api);
    this.name = o.secretName ?? ISTIOD_TLS_SECRET;
    this.secret = `${o.namespace}/${this.name}`;
    this.description = `secret ${this.secret}`;
    this.spiffe = workloadId(o.trustDomain, o.namespace, o.serviceAccount).uri;
    if (o.dnsNames.length === 0)
      throw new IstiodCertError(
        `${this.description}: no DNS names configured; istiod's certificate needs at least istiod.<namespace>.svc (kubernetes.istiodCertificate.dnsNames)`,
      );
  }

  private fail(verb: string, err: unknown): never {
    const hint =
      statusOf(err) === 403 ? `; ${forbiddenHint(verb, `secret ${this.name}`, this.o.namespace)}` : "";
    throw new IstiodCertError(`${verb} ${this.description}: ${describeKubeError(err)}${hint}`, {
      cause: err,
    });
  }

  private async get(): Promise<V1Secret | undefined> {
    try {
      return await this.api.readNamespacedSecret({ name: this.name, namespace: this.o.namespace });
    } catch (err) {
      if (statusOf(err) === 404) return undefined;
      return this.fail("get", err);
    }
  }

  /** The leaf of what the Secret holds when it is usable as-is; undefined means issue anew. */
  private usable(files: Partial<Files>, roots: Certificate[]): Certificate | undefined {
    if (!files["tls.crt"] || !files["tls.key"]) return undefined;
    try {
      const [leaf, ...intermediates] = parseCertificates(files["tls.crt"], "tls.crt");
      if (!leaf) return undefined;
      const key: KeyObject = createPrivateKey(files["tls.key"]);
      if (!privateKeyMatches(key, leaf.spki)) return undefined;
      if (!sortedEqual(leaf.sans.dnsNames, this.o.dnsNames)) return undefined;
      if (!sortedEqual(leaf.sans.uris, [this.spiffe])) return undefined;
      // Also catches a root rotation that retired the root this certificate chains to.
      verifyChain(leaf, intermediates, roots);
      return leaf;
    } catch {
      return undefined;
    }
  }

  private async issue(): Promise<{ files: Omit<Files, "ca.crt">; leaf: Certificate }> {
    const key = generateKeyPairFor("ec-p256");
    const csr = parseCsr(buildCsr(key.privateKey, {}));
    const issued = await this.o.authority.sign(
      { csr, ttlSeconds: this.o.ttlSeconds, dnsNames: this.o.dnsNames },
      workloadId(this.o.trustDomain, this.o.namespace, this.o.serviceAccount),
    );
    const chain = [issued.leafPem, ...issued.intermediatesPem]
      .map((p) => (p.endsWith("\n") ? p : `${p}\n`))
      .join("");
    this.stats.issued++;
    return {
      files: { "tls.crt": chain, "tls.key": privateKeyPem(key.privateKey) },
      leaf: parseCertificates(issued.leafPem, "issued certificate")[0]!,
    };
  }

  /** Reads the Secret, issues when missing/invalid/due, writes only when something differs. */
  async pass(): Promise<IstiodCertPass> {
    const bundle = this.o.authority.trustBundle().join("");
    if (!bundle)
      throw new IstiodCertError(
        `${this.description}: the authority has no trust bundle yet (still starting); retrying`,
      );
    const roots = parseCertificates(bundle, "trust bundle");
    const existing = await this.get();
    if (existing?.type !== undefined && existing.type !== TLS_SECRET_TYPE)
      throw new IstiodCertError(
        `${this.description} has type ${existing.type}, not ${TLS_SECRET_TYPE}, and a Secret's type cannot be changed: delete it (kubectl -n ${this.o.namespace} delete secret ${this.name}) so meshvault can recreate it`,
      );
    const current = existing ? decode(existing) : {};
    const kept = this.usable(current, roots);
    let action: IstiodCertPass["action"];
    let leaf: Certificate;
    let files: Files;
    if (kept && Date.now() < dueAt(kept, this.o.ttlSeconds).getTime()) {
      action = "kept";
      leaf = kept;
      // ca.crt follows the trust bundle (root rotation) without a new key.
      files = { "tls.crt": current["tls.crt"]!, "tls.key": current["tls.key"]!, "ca.crt": bundle };
    } else {
      if (existing && !kept)
        this.o.log?.warn(
          { secret: this.secret, spiffeId: this.spiffe },
          "istiod's Secret holds no usable certificate (missing, edited, wrong names, or not chaining to the trust bundle): replacing it",
        );
      const fresh = await this.issue();
      action = "issued";
      leaf = fresh.leaf;
      files = { ...fresh.files, "ca.crt": bundle };
    }
    const write = await this.write(existing, files);
    this.stats[write]++;
    return { action, write, notAfter: leaf.notAfter, renewAt: dueAt(leaf, this.o.ttlSeconds) };
  }

  private async write(existing: V1Secret | undefined, files: Files): Promise<IstiodCertPass["write"]> {
    const labelled = existing?.metadata?.labels?.[MANAGED_BY_LABEL] === "meshvault";
    const current = existing ? decode(existing) : {};
    if (existing && labelled && KEYS.every((k) => current[k] === files[k])) return "unchanged";
    // Keys we do not manage are kept, as cert-manager does.
    const data: Record<string, string> = { ...existing?.data };
    for (const k of KEYS) data[k] = Buffer.from(files[k]).toString("base64");
    const body: V1Secret = {
      apiVersion: "v1",
      kind: "Secret",
      type: TLS_SECRET_TYPE,
      metadata: {
        name: this.name,
        namespace: this.o.namespace,
        resourceVersion: existing?.metadata?.resourceVersion,
        labels: { ...existing?.metadata?.labels, [MANAGED_BY_LABEL]: "meshvault" },
        annotations: existing?.metadata?.annotations,
      },
      data,
    };
    if (!existing) {
      try {
        await this.api.createNamespacedSecret({ namespace: this.o.namespace, body });
        return "created";
      } catch (err) {
        return this.fail("create", err);
      }
    }
    try {
      // resourceVersion makes a concurrent edit a 409: the next pass re-reads and decides again.
      await this.api.replaceNamespacedSecret({ name: this.name, namespace: this.o.namespace, body });
      return "updated";
    } catch (err) {
      return this.fail("update", err);
    }
  }
}

/**
 * Runs passes: at each renewal time and every check period (repairs); backoff on failure.
 * Restartable: the leader elector starts it on every lease it wins.
 */
export class IstiodCertLoop {
  private loop: RenewalLoop<IstiodCertPass> | undefined;
  last: IstiodCertPass | undefined;

  constructor(
    private readonly writer: IstiodCertWriter,
    private readonly o: Pick<IstiodCertOptions, "checkPeriodMs" | "retryMinMs" | "retryMaxMs" | "log">,
  ) {}

  start(): void {
    if (this.loop) return;
    this.loop = new RenewalLoop<IstiodCertPass>({
      what: "istiod certificate",
      renew: async () => {
        try {
          return await this.writer.pass();
        } catch (err) {
          this.writer.stats.errors++;
          throw err;
        }
      },
      validity: (r) => ({ until: r.notAfter.getTime(), renewAt: r.renewAt.getTime() }),
      maxIntervalMs: this.o.checkPeriodMs ?? 30_000,
      backoff: { initialMs: this.o.retryMinMs ?? 1000, maxMs: this.o.retryMaxMs ?? 300_000 },
      ...(this.o.log ? { log: this.o.log } : {}),
      onRenewed: (r) => {
        this.last = r;
        if (r.write !== "unchanged" || r.action === "issued")
          this.o.log?.info(
            {
              secret: this.writer.secret,
              write: r.write,
              notAfter: r.notAfter.toISOString(),
              renewAt: r.renewAt.toISOString(),
            },
            r.action === "issued" ? "new istiod certificate" : "istiod certificate kept",
          );
      },
    });
    this.loop.start();
  }

  async stop(): Promise<void> {
    const l = this.loop;
    this.loop = undefined;
    await l?.stop();
  }
}

export interface IstiodCertServiceOptions extends IstiodCertOptions {
  /** Namespace of the Lease (meshvault's own). */
  leaseNamespace: string;
  leaseName?: string;
  identity?: string;
  leaseDurationSeconds?: number;
  renewPeriodMs?: number;
}

export interface IstiodCertHandle {
  isLeader(): boolean;
  stats(): IstiodCertStats;
  /** The last successful pass of this replica while leading. */
  last(): IstiodCertPass | undefined;
  /** Lease acquire/renew attempts finished (a standby's too). */
  leaseAttempts(): number;
  close(): Promise<void>;
}

export async function startIstiodCertWriter(o: IstiodCertServiceOptions): Promise<IstiodCertHandle> {
  const writer = new IstiodCertWriter(o);
  const loop = new IstiodCertLoop(writer, o);
  const elector = new LeaderElector({
    kubeConfig: o.kubeConfig,
    namespace: o.leaseNamespace,
    name: o.leaseName ?? DEFAULT_ISTIOD_LEASE,
    identity: o.identity,
    leaseDurationSeconds: o.leaseDurationSeconds,
    renewPeriodMs: o.renewPeriodMs,
    onStartedLeading: () => loop.start(),
    onStoppedLeading: () => loop.stop(),
    log: o.log,
  });
  await elector.start();
  return {
    isLeader: () => elector.isLeader(),
    stats: () => ({ ...writer.stats }),
    last: () => loop.last,
    leaseAttempts: () => elector.attempts,
    close: async () => {
      await elector.stop();
      await loop.stop();
    },
  };
}
