// `meshvault root rotate` / `root status`: observe every channel, say what blocks the next
// step, and take it. Each step is checked against what the channels really show, never
// assumed; the state is written only after a step's actions succeeded, so a crash between
// steps resumes from the last phase written.
import { existsSync, mkdirSync, readFileSync, renameSync } from "node:fs";
import { writeFileAtomicSync } from "../fs/atomic-write.js";
import { decodePem, encodePem } from "../pki/pem.js";
import { checkRootBundle, importRoot, ImportRootError } from "./import-root.js";
import { join, resolve } from "node:path";
import { X509Certificate } from "node:crypto";
import type { ServerConfig } from "../config/schema.js";
import { LocalAuthority } from "../authority/local.js";
import type { KeyAlgorithm } from "../pki/keys.js";
import { parseCertificate, parseCertificates } from "../pki/certificate.js";
import { verifyChain } from "../pki/chain.js";
import { createSigner, crossCertify } from "../pki/issue.js";
import { createPrivateKey } from "node:crypto";
import type { VaultClient } from "../vault/index.js";
import { readSource, type SourceSpec } from "../verify/sources.js";
import { bundleRoots } from "../verify/matrix.js";
import type { RotationView } from "./rotating-authority.js";
import { localNextDir } from "./server-hook.js";
import {
  enteredAt,
  PHASES,
  phaseIndex,
  type Phase,
  type RootRef,
  type RotationState,
  type RotationStore,
} from "./state.js";

export interface OperatorOptions {
  config: ServerConfig;
  store: RotationStore;
  /** Admin client (vault-intermediate): generates the new root, sets the default issuer. */
  admin?: () => VaultClient;
  /** Replicas' HTTP side ports (`http://host:port`); default the config's listen.http. */
  servers: string[];
  /** More channels to check: agents' SDS sockets or out dirs, kube contexts (verify's source syntax). */
  checks: SourceSpec[];
  now?: () => number;
  /** Requested lifetime of the new root (seconds). */
  rootTtlSeconds?: number;
  commonName?: string;
  /** prepare: certify the new root with the old one (sent after the new intermediate in switched). */
  crossSign?: boolean;
  /** prepare: import this root (PEM certificate + private key, made outside Vault) instead of generating one. */
  importRoot?: { pem: string; source: string };
  /**
   * `root rotate --new`: once the last rotation retired, the next step prepares another one
   * (once per operator: the rotation it starts is not followed by yet another).
   */
  newRotation?: boolean;
}

export type Holds = "old" | "new" | "old+new" | "other" | "unreadable";

export interface ChannelObservation {
  name: string;
  holds: Holds;
  detail?: string;
}

export interface ServerObservation {
  url: string;
  view?: RotationView;
  error?: string;
}

export interface Observation {
  state: RotationState | undefined;
  servers: ServerObservation[];
  channels: ChannelObservation[];
  /** Samples (agents' current leaves) that still chain only to the old root. */
  oldLeaves: string[];
  next: Phase | "done" | undefined;
  blockers: string[];
  /** Earliest moment the retire step may run (switched phase). */
  retireAfter?: { at: string; basis: string };
}

/** Blocks a new rotation: that server would sign its prepared/trust-both leaves under a retired root. */
const RETIRED_SIGNER = "a new rotation would sign under that root in prepared and trust-both";

const fpOf = (pem: string): string => new X509Certificate(pem).fingerprint256;

export function stepAfter(p: Phase | undefined): Phase {
  if (!p || p === "retired") return "prepared";
  return PHASES[phaseIndex(p) + 1]!;
}

function classify(pem: string | undefined, s: RotationState | undefined): Holds {
  if (!pem) return "unreadable";
  let fps: string[];
  try {
    fps = bundleRoots(pem, "bundle").map((c) => fpOf(c.pem));
  } catch {
    return "unreadable";
  }
  if (!s) return "other";
  const o = fps.includes(s.old.fingerprint);
  const n = fps.includes(s.next.fingerprint);
  return o && n ? "old+new" : o ? "old" : n ? "new" : "other";
}

export class RotationOperator {
  private readonly now: () => number;
  /** This operator prepared a rotation (newRotation applies once). */
  private startedNew = false;
  constructor(private readonly o: OperatorOptions) {
    this.now = o.now ?? Date.now;
  }

  rootCertFile(): string {
    const c = this.o.config;
    return resolve(c.rootCertFile ?? join(c.dataDir, "root-cert.pem"));
  }

  async observe(): Promise<Observation> {
    const s = await this.o.store.read();
    const servers: ServerObservation[] = [];
    const channels: ChannelObservation[] = [];
    const oldLeaves: string[] = [];
    for (const url of this.o.servers) {
      const base = url.replace(/\/+$/, "");
      const so: ServerObservation = { url: base };
      try {
        const r = await fetch(`${base}/rotation`, { signal: AbortSignal.timeout(5000) });
        if (r.status !== 200) so.error = `${base}/rotation answered HTTP ${r.status}`;
        else so.view = (await r.json()) as RotationView;
        const roots = await fetch(`${base}/roots`, { signal: AbortSignal.timeout(5000) });
        channels.push({
          name: `server ${base} /roots`,
          holds: classify(roots.status === 200 ? await roots.text() : undefined, s),
        });
      } catch (err) {
        so.error = `cannot reach ${base}: ${(err as Error).message}; is the server running (pass each replica with --server)?`;
        channels.push({ name: `server ${base} /roots`, holds: "unreadable", detail: so.error });
      }
      servers.push(so);
    }
    const file = this.rootCertFile();
    if (existsSync(file))
      channels.push({ name: `rootCertFile ${file}`, holds: classify(readFileSync(file, "utf8"), s) });
    for (const spec of this.o.checks) {
      const r = await readSource(spec);
      for (const c of r.channels)
        channels.push({
          name: `${r.name} ${c.name}`,
          holds: classify(c.bundlePem, s),
          ...(c.error ? { detail: c.error } : {}),
        });
      for (const n of r.notes) channels.push({ name: `${r.name}`, holds: "unreadable", detail: n });
      if (s)
        for (const x of r.samples) {
          try {
            const [leaf, ...rest] = parseCertificates(x.chainPem);
            const newRoot = parseCertificates(s.next.pem);
            try {
              verifyChain(leaf!, rest, newRoot);
            } catch {
              oldLeaves.push(
                `${r.name} ${x.what} (serial ${leaf!.serialHex}, expires ${leaf!.notAfter.toISOString()})`,
              );
            }
          } catch {
            /* unreadable samples are reported by verify */
          }
        }
    }
    const obs: Observation = { state: s, servers, channels, oldLeaves, next: undefined, blockers: [] };
    this.plan(obs);
    return obs;
  }

  /** Fills `next` and `blockers`: what the next step is and what keeps it from running now. */
  private plan(obs: Observation): void {
    const s = obs.state;
    const kind = this.o.config.authority.type;
    const b = obs.blockers;
    obs.next =
      s?.phase === "retired"
        ? this.o.newRotation && !this.startedNew
          ? "prepared"
          : "done"
        : stepAfter(s?.phase);
    if (kind !== "local" && kind !== "vault-intermediate" && kind !== "vault-sign")
      b.push(
        `the ${kind} authority does not rotate its root by itself: follow the README's "Rotating the root" steps for ${kind}`,
      );
    for (const sv of obs.servers) if (sv.error) b.push(sv.error);
    if (s?.phase === "retired")
      for (const sv of obs.servers) {
        const roots = sv.view?.baseRoots;
        if (roots && !roots.includes(s.next.fingerprint))
          b.push(
            `${sv.url}: its base signer is under root ${roots.join(", ")}, not the current root ${s.next.fingerprint}: ${RETIRED_SIGNER}; restart that server (it then starts under the current root) and run root rotate again`,
          );
      }
    if (!s || s.phase === "retired") {
      if (s?.phase === "retired")
        for (const c of obs.channels)
          if (c.holds !== "new") b.push(`${c.name} holds ${c.holds}, expected the new root alone`);
      return;
    }
    const views = obs.servers.filter((x) => x.view).map((x) => ({ url: x.url, v: x.view! }));
    for (const { url, v } of views) {
      if (v.stateError) b.push(`${url}: ${v.stateError}`);
      else if (v.id !== s.id && v.phase !== "none") b.push(`${url} follows rotation ${v.id}, not ${s.id}`);
      else if (v.phase !== s.phase && v.phase !== "none")
        b.push(`${url} still applies phase ${v.phase} (polls every rotation.pollInterval)`);
      else if (v.phase === "none" && phaseIndex(s.phase) < phaseIndex("retired"))
        b.push(`${url} has not applied rotation ${s.id} yet`);
    }
    switch (s.phase) {
      case "prepared":
        for (const { url, v } of views)
          if (!v.nextReady)
            b.push(
              `${url}: the signer under the new root is not ready${v.nextError ? `: ${v.nextError}` : ""}`,
            );
        break;
      case "trust-both":
        for (const c of obs.channels)
          if (c.holds !== "old+new")
            b.push(`${c.name} holds ${c.holds}${c.detail ? ` (${c.detail})` : ""}, not yet old+new`);
        break;
      case "switched": {
        for (const { url, v } of views)
          if (v.signer !== "next") b.push(`${url} still signs under the old root`);
          else if (s.cross && v.sendsCross !== s.cross.fingerprint)
            b.push(`${url} does not send the cross-certificate ${s.cross.fingerprint} yet`);
        let at = enteredAt(s, "switched")?.getTime() ?? this.now();
        let basis = "the switch itself";
        if (!obs.servers.length) {
          // No server to ask what it signed (stock istiod signs): bound it by the policy.
          const ttl = this.o.config.certificates.maxTtl;
          at += ttl * 1000;
          basis = `no meshvault server to ask (--server none): the switch + certificates.maxTtl (${ttl}s; set it to the longest workload certificate istiod issues)`;
        }
        for (const { url, v } of views)
          if (v.oldLeavesValidUntil && new Date(v.oldLeavesValidUntil).getTime() > at) {
            at = new Date(v.oldLeavesValidUntil).getTime();
            basis = `${url}: ${v.oldLeavesBasis ?? "longest old-root leaf"}`;
          }
        obs.retireAfter = { at: new Date(at).toISOString(), basis };
        if (this.now() < at)
          b.push(
            `leaves under the old root are valid until ${new Date(at).toISOString()} (${basis}); retire after that`,
          );
        for (const l of obs.oldLeaves) b.push(`${l} still chains to the old root only`);
        break;
      }
    }
  }

  /** Takes the next step if nothing blocks it; returns what it did. `dryRun`: only says it. */
  async step(obs: Observation, dryRun: boolean): Promise<string[]> {
    const s = obs.state;
    const next = obs.next;
    if (next === "done" || next === undefined) return [];
    const did: string[] = [];
    const at = new Date(this.now()).toISOString();
    if (next === "prepared") {
      const b = obs.blockers.filter(
        (x) => x.includes("does not rotate its root") || x.includes(RETIRED_SIGNER),
      );
      if (b.length) throw new Error(b.join("; "));
      const id = `r-${at.replace(/[-:]/g, "").replace(/\.\d+Z$/, "Z")}`;
      if (dryRun)
        return [
          `prepare: create a new root (${this.describeNewRoot(id)})${this.o.crossSign ? `, cross-sign it with the old root (${this.describeCrossSign()})` : ""} and mark rotation ${id} prepared; servers start a signer under it, nothing signs with it yet`,
        ];
      const { old, next: nextRoot } = await this.createRoot(id);
      const cross = this.o.crossSign ? await this.crossSign(old, nextRoot) : undefined;
      const st: RotationState = {
        id,
        authority: this.o.config.authority.type,
        phase: "prepared",
        old,
        next: nextRoot,
        startedAt: at,
        history: [{ phase: "prepared", at }],
        ...(cross ? { cross } : {}),
        ...(this.o.importRoot ? { imported: true } : {}),
      };
      await this.o.store.write(st);
      this.startedNew = true;
      did.push(
        `prepared rotation ${id}: new root ${nextRoot.fingerprint} (${nextRoot.subject}, expires ${nextRoot.notAfter})${this.o.importRoot ? ` imported from ${this.o.importRoot.source}${nextRoot.issuer ? ` as issuer ${nextRoot.issuer}` : ""}` : ""} next to ${old.fingerprint}`,
      );
      if (cross)
        did.push(
          `  cross-signed: the new root certified by the old one (${cross.fingerprint}, expires ${cross.notAfter}); servers send it after the new intermediate in switched`,
        );
      return did;
    }
    if (!s) return [];
    if (obs.blockers.length) return [];
    if (next === "retired") {
      if (dryRun) return [`retire: ${this.describeFinalise(s)}; publish the new root alone`];
      await this.finalise(s);
      did.push(this.describeFinalise(s));
    } else if (dryRun) return [describeStep(next)];
    const st: RotationState = {
      ...s,
      phase: next,
      history: [...s.history, { phase: next, at }],
      ...(next === "retired" && obs.retireAfter ? { oldLeavesValidUntil: obs.retireAfter.at } : {}),
    };
    await this.o.store.write(st);
    did.push(`rotation ${s.id}: ${describeStep(next)}`);
    if (next === "retired" && obs.retireAfter)
      did.push(
        `  the last leaf under the old root expired at ${obs.retireAfter.at} (${obs.retireAfter.basis})`,
      );
    return did;
  }

  private describeNewRoot(id: string): string {
    const mount = this.vaultMount();
    if (this.o.importRoot)
      return mount
        ? `import ${this.o.importRoot.source} as a new issuer of ${mount} via ${mount}/issuers/import/bundle`
        : `copy ${this.o.importRoot.source} into ${join(resolve(this.o.config.dataDir), localNextDir(id))}`;
    if (mount) return `issuer meshvault-${id} in ${mount} via ${mount}/root/generate/internal`;
    return `${join(resolve(this.o.config.dataDir), localNextDir(id))}/root-cert.pem`;
  }

  /** The PKI mount holding the roots: vault-intermediate's rootMount, vault-sign's signing mount. */
  private vaultMount(): string | undefined {
    const c = this.o.config.authority;
    return c.type === "vault-intermediate" ? c.rootMount : c.type === "vault-sign" ? c.mount : undefined;
  }

  private describeCrossSign(): string {
    const mount = this.vaultMount();
    if (mount) return `${mount}/issuer/<old>/sign-self-issued`;
    return `with ${join(resolve(this.o.config.dataDir), "local-ca", "root-key.pem")}`;
  }

  /** The new root certified by the old one; checked before it is recorded. */
  private async crossSign(old: RootRef, next: RootRef): Promise<NonNullable<RotationState["cross"]>> {
    const mount = this.vaultMount();
    let pem: string;
    if (mount) {
      const admin = this.o.admin?.();
      if (!admin) throw new Error("--cross-sign needs an admin Vault token (VAULT_TOKEN / BAO_TOKEN)");
      if (!old.issuer)
        throw new Error(
          `--cross-sign: the old root is not an issuer of ${mount} (its default issuer is an intermediate), so ${mount} cannot sign with it: rotate without --cross-sign`,
        );
      // Keeps the new root's subject, key and key identifier; only issuer and signature change.
      const path = `${mount}/issuer/${old.issuer}/sign-self-issued`;
      const r = await admin.write<{ certificate?: string }>(path, { certificate: next.pem });
      if (!r?.data?.certificate)
        throw new Error(`${path} answered without data.certificate: does the admin token have sudo on it?`);
      pem = r.data.certificate;
    } else {
      const dir = join(resolve(this.o.config.dataDir), "local-ca");
      const signer = createSigner(
        parseCertificate(old.pem, "old root"),
        createPrivateKey(readFileSync(join(dir, "root-key.pem"), "utf8")),
      );
      pem = crossCertify(parseCertificate(next.pem, "new root"), signer).pem;
    }
    const x = parseCertificate(pem, "cross-certificate");
    const n = parseCertificate(next.pem, "new root");
    if (
      Buffer.compare(Buffer.from(x.subjectRaw), Buffer.from(n.subjectRaw)) !== 0 ||
      Buffer.compare(Buffer.from(x.spki), Buffer.from(n.spki)) !== 0
    )
      throw new Error("the cross-certificate does not carry the new root's subject and key");
    verifyChain(x, [], parseCertificates(old.pem));
    return { pem: x.pem, fingerprint: fpOf(x.pem), notAfter: x.notAfter.toISOString() };
  }

  private describeFinalise(s: RotationState): string {
    const mount = this.vaultMount();
    if (mount)
      return `make issuer ${s.next.issuer} the default of ${mount} (${mount}/config/issuers), so restarted servers start under it`;
    const dir = resolve(this.o.config.dataDir);
    return `move ${join(dir, "local-ca")} to ${join(dir, `local-ca-retired-${s.id}`)} and ${join(dir, localNextDir(s.id))} to ${join(dir, "local-ca")}`;
  }

  private async createRoot(id: string): Promise<{ old: RootRef; next: RootRef }> {
    const c = this.o.config.authority;
    const ref = (pem: string, issuer?: string): RootRef => {
      const x = new X509Certificate(pem);
      return {
        fingerprint: x.fingerprint256,
        pem: pem.endsWith("\n") ? pem : `${pem}\n`,
        subject: x.subject.replace(/\n/g, ", "),
        notAfter: new Date(x.validTo).toISOString(),
        ...(issuer ? { issuer } : {}),
      };
    };
    const td = this.o.config.trustDomain;
    const imported = this.o.importRoot
      ? { ...this.o.importRoot, cert: checkRootBundle(this.o.importRoot.pem, this.o.importRoot.source) }
      : undefined;
    const notOld = (oldPem: string): void => {
      if (imported && fpOf(oldPem) === fpOf(imported.cert.pem))
        throw new ImportRootError(`--import-root ${imported.source}: that is the current root already`);
    };
    if (c.type === "local") {
      const dir = resolve(this.o.config.dataDir);
      const oldPem = readFileSync(join(dir, "local-ca", "root-cert.pem"), "utf8");
      if (imported) {
        notOld(oldPem);
        // The local CA then makes its intermediate under it, as for a root it generated.
        const next = join(dir, localNextDir(id));
        mkdirSync(next, { recursive: true, mode: 0o700 });
        const key = decodePem(imported.pem).find((b) => b.type.endsWith("PRIVATE KEY"))!;
        writeFileAtomicSync(join(next, "root-key.pem"), encodePem(key.type, key.der), 0o600);
        writeFileAtomicSync(join(next, "root-cert.pem"), imported.cert.pem, 0o644);
      }
      const a = new LocalAuthority({
        dataDir: dir,
        dirName: localNextDir(id),
        trustDomain: td,
        keyAlgorithm: c.keyAlgorithm as KeyAlgorithm,
        rootTtlSeconds: this.o.rootTtlSeconds ?? c.rootTtl,
        intermediateTtlSeconds: c.intermediateTtl,
      });
      await a.start();
      await a.close();
      return {
        old: ref(oldPem),
        next: ref(readFileSync(join(dir, localNextDir(id), "root-cert.pem"), "utf8")),
      };
    }
    const mount = this.vaultMount();
    if (!mount) throw new Error(`the ${c.type} authority does not rotate its root by itself`);
    const admin = this.o.admin?.();
    if (!admin) throw new Error(`${c.type} rotation needs an admin Vault token (VAULT_TOKEN / BAO_TOKEN)`);
    const cur = await admin.read<{ certificate?: string; issuer_id?: string; ca_chain?: string[] }>(
      `${mount}/issuer/default/json`,
      { noAuth: true },
    );
    if (!cur?.data?.certificate)
      throw new Error(
        `${mount} on Vault at ${admin.address} has no default issuer: set it up first (meshvault vault setup)`,
      );
    // vault-sign's mount usually holds an intermediate: the old root is the top of its chain.
    const chain = [cur.data.certificate, ...(cur.data.ca_chain ?? [])].map((p) => new X509Certificate(p));
    const top = chain.find((x) => x.subject === x.issuer && x.checkIssued(x));
    if (!top)
      throw new Error(
        `the default issuer of ${mount} on Vault at ${admin.address} has no root in its chain: import the chain up to the root (bao write ${mount}/intermediate/set-signed) first`,
      );
    const old = ref(top.toString(), top === chain[0] ? cur.data.issuer_id : undefined);
    if (imported) {
      notOld(old.pem);
      const issuer = await importRoot(admin, mount, imported.pem, imported.cert);
      return { old, next: ref(imported.cert.pem, issuer) };
    }
    const oldX = top;
    const ttl = this.o.rootTtlSeconds ?? 10 * 365 * 86400;
    const alg = c.type === "vault-intermediate" ? (c.keyAlgorithm as KeyAlgorithm) : keyAlgorithmOf(top);
    const key = alg.startsWith("ec-")
      ? { key_type: "ec", key_bits: alg === "ec-p384" ? 384 : 256 }
      : alg.startsWith("rsa-")
        ? { key_type: "rsa", key_bits: Number(alg.slice(4)) }
        : { key_type: "ed25519" };
    const made = await admin.write<{ certificate?: string; issuer_id?: string }>(
      `${mount}/root/generate/internal`,
      {
        common_name:
          this.o.commonName ??
          `${oldX.subject.match(/CN=([^\n]+)/)?.[1] ?? `meshvault root CA (${td})`} ${id}`,
        issuer_name: `meshvault-${id}`,
        uri_sans: `spiffe://${td}`,
        ttl: `${ttl}s`,
        ...key,
      },
    );
    if (!made?.data?.certificate || !made.data.issuer_id)
      throw new Error(
        `${mount}/root/generate/internal answered without certificate/issuer_id: does this Vault support multiple issuers per mount (Vault >= 1.11, OpenBao)?`,
      );
    return { old, next: ref(made.data.certificate, made.data.issuer_id) };
  }

  private async finalise(s: RotationState): Promise<void> {
    const mount = this.vaultMount();
    if (mount) {
      const admin = this.o.admin?.();
      if (!admin) throw new Error("retiring needs an admin Vault token (VAULT_TOKEN / BAO_TOKEN)");
      await admin.write(`${mount}/config/issuers`, { default: s.next.issuer });
      return;
    }
    const dir = resolve(this.o.config.dataDir);
    const next = join(dir, localNextDir(s.id));
    if (!existsSync(next)) return; // already moved by an earlier, interrupted run
    renameSync(join(dir, "local-ca"), join(dir, `local-ca-retired-${s.id}`));
    renameSync(next, join(dir, "local-ca"));
  }
}

/** The key algorithm of `cert` (a new root in a mount without one configured takes the old root's). */
function keyAlgorithmOf(cert: X509Certificate): KeyAlgorithm {
  const k = cert.publicKey;
  if (k.asymmetricKeyType === "ed25519") return "ed25519";
  if (k.asymmetricKeyType === "rsa") {
    const bits = k.asymmetricKeyDetails?.modulusLength ?? 2048;
    return bits >= 4096 ? "rsa-4096" : bits >= 3072 ? "rsa-3072" : "rsa-2048";
  }
  return k.asymmetricKeyDetails?.namedCurve === "secp384r1" ? "ec-p384" : "ec-p256";
}

export function describeStep(p: Phase): string {
  switch (p) {
    case "prepared":
      return "prepare: create the new root and a signer under it; nothing signs with it yet";
    case "trust-both":
      return "trust both: publish old + new root on every channel (servers' /roots and CreateCertificate, rootCertFile, ConfigMaps, agents)";
    case "switched":
      return "switch: sign new leaves (and the servers' TLS certificates) under the new root; both roots stay published";
    case "retired":
      return "retire: publish the new root alone";
  }
}

/** What each step waits for, for --dry-run and the README. */
export function waitsFor(p: Phase): string {
  switch (p) {
    case "prepared":
      return "nothing (no rotation in progress, or the last one retired)";
    case "trust-both":
      return "every server has started its signer under the new root";
    case "switched":
      return "every channel (servers' /roots, rootCertFile, ConfigMaps, --check sources) holds old + new";
    case "retired":
      return "every server signs under the new root, the longest old-root leaf has expired, no --check agent holds an old-root leaf";
  }
}
