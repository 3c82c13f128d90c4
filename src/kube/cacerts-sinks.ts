// Where `meshvault cacerts` puts the plug-in CA files istiod reads from /etc/cacerts:
// the `cacerts` Secret (seed 002) or a directory, normally a memory-backed emptyDir
// shared with istiod (seed 003: the key never reaches etcd).
import { randomBytes } from "node:crypto";
import {
  lstat,
  mkdir,
  readFile,
  readdir,
  readlink,
  rename,
  rm,
  symlink,
  writeFile,
  chmod,
} from "node:fs/promises";
import { join } from "node:path";
import { CoreV1Api, type KubeConfig, type V1Secret } from "@kubernetes/client-node";
import { describeKubeError, forbiddenHint, statusOf } from "./client.js";
import type { IssuedIntermediate } from "./intermediate-source.js";

/** File name -> content, as istiod expects them in /etc/cacerts. */
export type CaCertsFiles = Record<string, string>;

export const PLUGIN_FILES = ["ca-cert.pem", "ca-key.pem", "cert-chain.pem", "root-cert.pem"] as const;
export const TLS_FILES = ["tls.crt", "tls.key", "ca.crt"] as const;
const KEY_FILES = new Set(["ca-key.pem", "tls.key"]);
const ALL_FILES = new Set<string>([...PLUGIN_FILES, ...TLS_FILES]);

/** The plug-in layout, plus the kubernetes.io/tls names (cert-manager's) when asked. */
export function layoutFiles(i: IssuedIntermediate, tlsLayout: boolean): CaCertsFiles {
  const files: CaCertsFiles = {
    "ca-cert.pem": i.caCertPem,
    "ca-key.pem": i.caKeyPem,
    "cert-chain.pem": i.certChainPem,
    "root-cert.pem": i.rootCertPem,
  };
  if (tlsLayout) {
    files["tls.crt"] = i.caCertPem;
    files["tls.key"] = i.caKeyPem;
    files["ca.crt"] = i.rootCertPem;
  }
  return files;
}

export type WriteResult = "created" | "updated" | "unchanged";

export interface CaCertsSink {
  readonly description: string;
  /** What is there now (only the names we manage), or undefined when nothing is. */
  read(): Promise<CaCertsFiles | undefined>;
  /** Makes the sink hold exactly `files` (of the names we manage). */
  write(files: CaCertsFiles): Promise<WriteResult>;
}

function sameFiles(a: CaCertsFiles, b: CaCertsFiles): boolean {
  const ka = Object.keys(a).sort();
  const kb = Object.keys(b).sort();
  return ka.length === kb.length && ka.every((k, i) => k === kb[i] && a[k] === b[k]);
}

export class CaCertsSinkError extends Error {
  override name = "CaCertsSinkError";
}

export interface SecretSinkOptions {
  kubeConfig: KubeConfig;
  namespace?: string;
  name?: string;
}

/** Secret `cacerts` in istio-system (names configurable), type Opaque like Istio's docs create it. */
export class SecretSink implements CaCertsSink {
  readonly description: string;
  private readonly api: CoreV1Api;
  private readonly namespace: string;
  private readonly name: string;

  constructor(o: SecretSinkOptions) {
    this.api = o.kubeConfig.makeApiClient(CoreV1Api);
    this.namespace = o.namespace ?? "istio-system";
    this.name = o.name ?? "cacerts";
    this.description = `secret ${this.namespace}/${this.name}`;
  }

  private fail(verb: string, err: unknown): never {
    const hint =
      statusOf(err) === 403 ? `; ${forbiddenHint(verb, `secret ${this.name}`, this.namespace)}` : "";
    throw new CaCertsSinkError(`${verb} ${this.description}: ${describeKubeError(err)}${hint}`, {
      cause: err,
    });
  }

  private async get(): Promise<V1Secret | undefined> {
    try {
      return await this.api.readNamespacedSecret({ name: this.name, namespace: this.namespace });
    } catch (err) {
      if (statusOf(err) === 404) return undefined;
      return this.fail("get", err);
    }
  }

  private static decode(s: V1Secret): CaCertsFiles {
    const out: CaCertsFiles = {};
    for (const [k, v] of Object.entries(s.data ?? {}))
      if (ALL_FILES.has(k)) out[k] = Buffer.from(v, "base64").toString("utf8");
    return out;
  }

  async read(): Promise<CaCertsFiles | undefined> {
    const s = await this.get();
    return s ? SecretSink.decode(s) : undefined;
  }

  async write(files: CaCertsFiles): Promise<WriteResult> {
    const existing = await this.get();
    if (existing && sameFiles(SecretSink.decode(existing), files)) return "unchanged";
    // Keys we do not manage (e.g. ca-crl.pem someone added) are kept; stale layout files are not.
    const data: Record<string, string> = {};
    for (const [k, v] of Object.entries(existing?.data ?? {})) if (!ALL_FILES.has(k)) data[k] = v;
    for (const [k, v] of Object.entries(files)) data[k] = Buffer.from(v).toString("base64");
    const body: V1Secret = {
      apiVersion: "v1",
      kind: "Secret",
      type: existing?.type ?? "Opaque",
      metadata: {
        name: this.name,
        namespace: this.namespace,
        resourceVersion: existing?.metadata?.resourceVersion,
        labels: { ...existing?.metadata?.labels, "app.kubernetes.io/managed-by": "meshvault" },
        annotations: existing?.metadata?.annotations,
      },
      data,
    };
    if (!existing) {
      try {
        await this.api.createNamespacedSecret({ namespace: this.namespace, body });
        return "created";
      } catch (err) {
        return this.fail("create", err);
      }
    }
    try {
      await this.api.replaceNamespacedSecret({ name: this.name, namespace: this.namespace, body });
      return "updated";
    } catch (err) {
      return this.fail("update", err);
    }
  }
}

/**
 * A directory written the way kubelet writes Secret volumes: the files live in a fresh
 * `..<stamp>` directory, `..data` is a symlink to it swapped by one rename, and each name
 * is a symlink through `..data`. istiod (which watches /etc/cacerts) therefore never sees
 * a new certificate next to an old key. Keys are 0600, the rest 0644.
 */
export class DirSink implements CaCertsSink {
  readonly description: string;
  constructor(private readonly dir: string) {
    this.description = `directory ${dir}`;
  }

  async read(): Promise<CaCertsFiles | undefined> {
    const out: CaCertsFiles = {};
    for (const name of ALL_FILES) {
      try {
        out[name] = await readFile(join(this.dir, name), "utf8");
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw this.error("read", err);
      }
    }
    return Object.keys(out).length ? out : undefined;
  }

  private error(verb: string, err: unknown): CaCertsSinkError {
    return new CaCertsSinkError(
      `${verb} ${this.description}: ${(err as Error).message}; it must be writable by meshvault (an emptyDir with medium: Memory shared with istiod)`,
      { cause: err },
    );
  }

  async write(files: CaCertsFiles): Promise<WriteResult> {
    const existing = await this.read();
    if (existing && sameFiles(existing, files)) return "unchanged";
    try {
      await mkdir(this.dir, { recursive: true, mode: 0o755 });
      const stamp = `..${new Date().toISOString().replace(/[:.]/g, "_")}.${randomBytes(3).toString("hex")}`;
      const target = join(this.dir, stamp);
      await mkdir(target, { mode: 0o755 });
      for (const [name, content] of Object.entries(files)) {
        const mode = KEY_FILES.has(name) ? 0o600 : 0o644;
        await writeFile(join(target, name), content, { mode });
        await chmod(join(target, name), mode); // the umask must not widen or narrow it
      }
      const previous = await readlink(join(this.dir, "..data")).catch(() => undefined);
      await this.replaceSymlink("..data", stamp);
      for (const name of Object.keys(files)) await this.ensureLink(name);
      // Names of a layout no longer written (e.g. tls.* after --tls-layout was dropped).
      for (const name of ALL_FILES) if (!(name in files)) await rm(join(this.dir, name), { force: true });
      if (previous && previous !== stamp)
        await rm(join(this.dir, previous), { recursive: true, force: true });
      await this.removeStrays(stamp);
    } catch (err) {
      throw this.error("write", err);
    }
    return existing ? "updated" : "created";
  }

  private async replaceSymlink(name: string, to: string): Promise<void> {
    const tmp = join(this.dir, `..tmp-${randomBytes(4).toString("hex")}`);
    await symlink(to, tmp);
    await rename(tmp, join(this.dir, name));
  }

  private async ensureLink(name: string): Promise<void> {
    const path = join(this.dir, name);
    const want = join("..data", name);
    const st = await lstat(path).catch(() => undefined);
    if (st?.isSymbolicLink() && (await readlink(path)) === want) return;
    await this.replaceSymlink(name, want);
  }

  /** Old `..<stamp>` directories left by a crash between the swap and the cleanup. */
  private async removeStrays(current: string): Promise<void> {
    for (const entry of await readdir(this.dir)) {
      if (entry.startsWith("..") && entry !== "..data" && entry !== current && /^\.\.\d{4}-/.test(entry))
        await rm(join(this.dir, entry), { recursive: true, force: true });
    }
  }
}
