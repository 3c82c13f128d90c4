// Where `meshvault verify` and `meshvault root status` read trust bundles from. A source is
// written `[name=]kind:target[,key=value...]`:
//
//   ca:http://host:15014[,grpc=host:15012,token=FILE,server-name=NAME]   a CA server's /roots
//                       (with grpc + token: a test leaf is issued, proving what it signs)
//   http(s)://...        same as ca:
//   file:PATH | PATH     a PEM bundle or chain; a directory: an agent's out dir or a cacerts dir
//   kube:CONTEXT[,kubeconfig=FILE,ns=NS...,cacerts=NS/NAME]   istio-ca-root-cert ConfigMaps
//                       (every namespace, or each ns=) and the cacerts Secret
//   sds:SOCKET | unix://SOCKET   an agent's Envoy SDS socket: ROOTCA, and `default` as a sample
import { existsSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { createCaClient } from "../agent/ca-client.js";
import { loadKubeConfig } from "../kube/client.js";
import { readClusterTrust } from "../kube/trust-channels.js";
import { buildCsr } from "../pki/csr.js";
import { generateKeyPairAsync } from "../pki/keys.js";
import { isSelfSigned, parseCertificates } from "../pki/certificate.js";
import { sdsCredentialSource } from "../tunnel/credentials.js";
import type { SourceReading } from "./matrix.js";

export type SourceKind = "ca" | "file" | "kube" | "sds";

export interface SourceSpec {
  name: string;
  kind: SourceKind;
  target: string;
  params: Map<string, string[]>;
  /** As written, without the `name=` prefix. */
  text: string;
}

export class SourceSpecError extends Error {
  override name = "SourceSpecError";
}

const KNOWN: Record<SourceKind, string[]> = {
  ca: ["grpc", "token", "server-name"],
  file: [],
  kube: ["kubeconfig", "ns", "cacerts", "configmap"],
  sds: [],
};

/** Parses `[name=]kind:target[,key=value...]`; errors name the source and the accepted forms. */
export function parseSourceSpec(text: string): SourceSpec {
  const parts = text.split(",");
  let head = parts[0]!.trim();
  let name: string | undefined;
  const eq = head.indexOf("=");
  const colon = head.indexOf(":");
  if (eq > 0 && (colon < 0 || eq < colon)) {
    name = head.slice(0, eq);
    head = head.slice(eq + 1);
  }
  let kind: SourceKind;
  let target: string;
  if (/^https?:\/\//.test(head)) [kind, target] = ["ca", head];
  else if (head.startsWith("unix://")) [kind, target] = ["sds", head.slice("unix://".length)];
  else {
    const m = /^(ca|file|kube|sds):(.*)$/.exec(head);
    if (m) [kind, target] = [m[1] as SourceKind, m[2]!];
    else [kind, target] = ["file", head];
  }
  if (kind === "ca" && !/^https?:\/\//.test(target))
    throw new SourceSpecError(
      `source "${text}": ca: needs the server's HTTP URL, e.g. ca:http://127.0.0.1:15014`,
    );
  if (!target && kind !== "kube") throw new SourceSpecError(`source "${text}": nothing after "${kind}:"`);
  const params = new Map<string, string[]>();
  for (const p of parts.slice(1)) {
    const i = p.indexOf("=");
    const k = i > 0 ? p.slice(0, i).trim() : "";
    if (!KNOWN[kind].includes(k))
      throw new SourceSpecError(
        `source "${text}": unknown option "${p}" for ${kind}: sources` +
          (KNOWN[kind].length
            ? ` (accepted: ${KNOWN[kind].map((x) => `${x}=`).join(", ")})`
            : " (they take none)"),
      );
    params.set(k, [...(params.get(k) ?? []), p.slice(i + 1).trim()]);
  }
  return { name: name ?? head, kind, target, params, text: name ? text.slice(name.length + 1) : text };
}

const one = (s: SourceSpec, k: string): string | undefined => s.params.get(k)?.at(-1);

export interface ReadOptions {
  /** Per-source timeout for network reads (ms). Default 10 s. */
  timeoutMs?: number;
}

export async function readSource(spec: SourceSpec, o: ReadOptions = {}): Promise<SourceReading> {
  const r: SourceReading = { name: spec.name, spec: spec.text, channels: [], samples: [], notes: [] };
  const timeoutMs = o.timeoutMs ?? 10_000;
  switch (spec.kind) {
    case "ca":
      await readCa(spec, r, timeoutMs);
      break;
    case "file":
      readFiles(spec.target, r);
      break;
    case "kube": {
      const ns = spec.params.get("ns") ?? [];
      const cacerts = one(spec, "cacerts");
      const [cns, cname] = (cacerts ?? "istio-system/cacerts").split("/");
      try {
        const kc = loadKubeConfig({ kubeconfig: one(spec, "kubeconfig"), context: spec.target || undefined });
        const t = await readClusterTrust(kc, {
          namespaces: ns,
          cacerts: { namespace: cns!, name: cname ?? "cacerts", required: cacerts !== undefined },
          configMapName: one(spec, "configmap"),
        });
        r.channels.push(...t.channels);
        r.samples.push(...t.samples);
        r.notes.push(...t.notes);
      } catch (err) {
        r.channels.push({ name: "kubernetes", error: (err as Error).message });
      }
      break;
    }
    case "sds":
      await readSds(spec.target, r, timeoutMs);
      break;
  }
  return r;
}

function rootsUrl(target: string): string {
  const u = new URL(target);
  if (u.pathname === "/" || u.pathname === "") u.pathname = "/roots";
  return u.toString();
}

async function readCa(spec: SourceSpec, r: SourceReading, timeoutMs: number): Promise<void> {
  const url = rootsUrl(spec.target);
  let bundle: string | undefined;
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) });
    const text = await res.text();
    if (res.status !== 200)
      r.channels.push({
        name: "/roots",
        error: `${url} answered HTTP ${res.status}: ${text.trim().slice(0, 200)}`,
      });
    else {
      bundle = text;
      r.channels.push({ name: "/roots", bundlePem: text });
    }
  } catch (err) {
    r.channels.push({
      name: "/roots",
      error: `cannot fetch ${url}: ${(err as Error).message}; is the server running and is this its HTTP (--http-listen) address?`,
    });
  }
  const grpc = one(spec, "grpc");
  const tokenFile = one(spec, "token");
  if (!grpc) return;
  if (!tokenFile) {
    r.notes.push(
      `grpc= given without token=: cannot ask ${grpc} for a test leaf (pass token=FILE, e.g. from \`meshvault token create\`)`,
    );
    return;
  }
  if (!bundle) return;
  let token: string;
  try {
    token = readFileSync(tokenFile, "utf8").trim();
  } catch (err) {
    r.notes.push(
      `cannot read token file ${tokenFile}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`,
    );
    return;
  }
  const serverName = one(spec, "server-name");
  const client = await createCaClient({
    address: grpc,
    rootCertFile: `${url} (fetched)`,
    rootsPem: bundle,
    timeoutMs,
    shareChannel: false,
    ...(serverName ? { serverName } : {}),
  });
  try {
    const { privateKey } = await generateKeyPairAsync("ec-p256");
    const chain = await client.createCertificate({
      csrPem: buildCsr(privateKey, {}),
      validitySeconds: 300,
      token,
    });
    // The response's last element is the root bundle: the sample is leaf + intermediates.
    r.samples.push({ what: "test leaf", chainPem: chain.slice(0, -1).join("") });
  } catch (err) {
    r.notes.push(`test leaf from ${grpc} refused: ${(err as Error).message}`);
  } finally {
    client.close();
  }
}

function readFiles(path: string, r: SourceReading): void {
  let files: { name: string; path: string }[];
  try {
    if (statSync(path).isDirectory()) {
      // An agent's out dir, or an Istio plug-in CA (cacerts) directory.
      files = ["root-cert.pem", "cert-chain.pem", "ca-cert.pem"]
        .map((n) => ({ name: n, path: join(path, n) }))
        .filter((f) => existsSync(f.path));
      if (files.length === 0) {
        r.channels.push({
          name: path,
          error: "directory has no root-cert.pem, cert-chain.pem or ca-cert.pem",
        });
        return;
      }
    } else files = [{ name: path, path }];
  } catch (err) {
    r.channels.push({
      name: path,
      error: `cannot read: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`,
    });
    return;
  }
  for (const f of files) {
    let text: string;
    try {
      text = readFileSync(f.path, "utf8");
      parseCertificates(text, f.path);
    } catch (err) {
      r.channels.push({ name: f.name, error: (err as Error).message });
      continue;
    }
    const certs = parseCertificates(text, f.path);
    const selfSigned = certs.filter(isSelfSigned);
    if (selfSigned.length)
      r.channels.push({ name: f.name, bundlePem: selfSigned.map((c) => c.pem).join("") });
    if (certs[0] && !selfSigned.includes(certs[0]))
      r.samples.push({
        what: f.name,
        chainPem: certs
          .filter((c) => !selfSigned.includes(c))
          .map((c) => c.pem)
          .join(""),
      });
  }
  if (files.some((f) => f.name === "ca-cert.pem") && files.some((f) => f.name === "cert-chain.pem")) {
    // cacerts layout: ca-cert.pem is the sample, cert-chain.pem its chain; do not double count.
    const chain = r.samples.find((s) => s.what === "cert-chain.pem");
    const ca = r.samples.find((s) => s.what === "ca-cert.pem");
    if (chain && ca) {
      ca.chainPem += chain.chainPem;
      r.samples.splice(r.samples.indexOf(chain), 1);
    }
  }
}

async function readSds(socket: string, r: SourceReading, timeoutMs: number): Promise<void> {
  const src = sdsCredentialSource(socket, "meshvault-verify");
  try {
    const c = await src.ready(timeoutMs);
    r.channels.push({ name: "SDS ROOTCA", bundlePem: c.rootsPem });
    r.samples.push({ what: "SDS default", chainPem: c.certChainPem });
  } catch (err) {
    r.channels.push({ name: "SDS", error: `${src.description}: ${(err as Error).message}` });
  } finally {
    await src.close();
  }
}
