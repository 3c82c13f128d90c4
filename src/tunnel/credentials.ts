// Where a tunnel gets its certificate, key and trust bundle: the agent's output
// directory (polled, so it works on every filesystem and with atomic renames) or
// the agent's Envoy SDS socket (a real xDS client). Both notify on change so the
// tunnel can swap contexts without touching open connections.
import { promises as fs } from "node:fs";
import path from "node:path";
import * as grpc from "@grpc/grpc-js";
import { CERT_CHAIN_FILE, KEY_FILE, ROOT_CERT_FILE } from "../agent/file-output.js";
import {
  DEFAULT_RESOURCE,
  ROOTCA_RESOURCE,
  SDS_METHODS,
  SECRET_TYPE_URL,
  loadSdsProtos,
  type WorkloadSecrets,
} from "../agent/sds/index.js";
import type { DiscoveryRequest, DiscoveryResponse } from "../agent/sds/proto.js";
import { parseCertificate } from "../pki/certificate.js";
import { privateKeyMatches } from "../pki/keys.js";
import { Backoff } from "../timing/backoff.js";
import { createPrivateKey } from "node:crypto";

export type TlsCredentials = WorkloadSecrets;

export interface CredentialSource {
  /** Latest consistent credentials, or undefined before the first arrive. */
  current(): TlsCredentials | undefined;
  onChange(listener: () => void): () => void;
  /** Resolves with the first credentials; rejects after `timeoutMs`. */
  ready(timeoutMs?: number): Promise<TlsCredentials>;
  close(): Promise<void>;
  /** Human-readable origin for logs and /_status. */
  readonly description: string;
}

/** True when the key certifies the chain's leaf: guards against reading key and chain from two rotations. */
export function consistent(c: TlsCredentials): boolean {
  try {
    const leaf = parseCertificate(c.certChainPem, "certificate chain");
    return (
      privateKeyMatches(createPrivateKey(c.privateKeyPem), leaf.spki) && c.rootsPem.includes("-----BEGIN")
    );
  } catch {
    return false;
  }
}

/** Base for sources: holds the value, notifies listeners, implements ready(). */
class Holder {
  private value: TlsCredentials | undefined;
  private readonly listeners = new Set<() => void>();
  current(): TlsCredentials | undefined {
    return this.value;
  }
  onChange(l: () => void): () => void {
    this.listeners.add(l);
    return () => this.listeners.delete(l);
  }
  protected update(v: TlsCredentials): void {
    const old = this.value;
    if (
      old &&
      old.certChainPem === v.certChainPem &&
      old.privateKeyPem === v.privateKeyPem &&
      old.rootsPem === v.rootsPem
    )
      return;
    this.value = v;
    for (const l of [...this.listeners]) l();
  }
  ready(timeoutMs = 30_000, what = "credentials"): Promise<TlsCredentials> {
    const v = this.value;
    if (v) return Promise.resolve(v);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        off();
        reject(
          new Error(
            `no ${what} within ${timeoutMs} ms; is the agent running and has it obtained a certificate?`,
          ),
        );
      }, timeoutMs);
      const off = this.onChange(() => {
        clearTimeout(timer);
        off();
        resolve(this.value!);
      });
    });
  }
}

/** Polls `<dir>/{cert-chain,key,root-cert}.pem` (the agent's file output). */
export function fileCredentialSource(dir: string, pollMs = 1000): CredentialSource {
  const abs = path.resolve(dir);
  const description = `files in ${abs}`;
  const h = new (class extends Holder {
    poll = async (): Promise<void> => {
      try {
        const [certChainPem, privateKeyPem, rootsPem] = await Promise.all([
          fs.readFile(path.join(abs, CERT_CHAIN_FILE), "utf8"),
          fs.readFile(path.join(abs, KEY_FILE), "utf8"),
          fs.readFile(path.join(abs, ROOT_CERT_FILE), "utf8"),
        ]);
        const cur = this.current();
        if (
          cur &&
          cur.certChainPem === certChainPem &&
          cur.privateKeyPem === privateKeyPem &&
          cur.rootsPem === rootsPem
        )
          return;
        const next = { certChainPem, privateKeyPem, rootsPem };
        // Mid-rotation (new key, old chain): skip; the next poll sees the pair.
        if (consistent(next)) this.update(next);
      } catch {
        // Not written yet: the agent may still be starting.
      }
    };
  })();
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  const loop = (): void => {
    void h.poll().finally(() => {
      if (!stopped) {
        timer = setTimeout(loop, pollMs);
        timer.unref();
      }
    });
  };
  loop();
  return {
    description,
    current: () => h.current(),
    onChange: (l) => h.onChange(l),
    ready: (t) => h.ready(t, `certificate files in ${abs}`),
    close: async () => {
      stopped = true;
      if (timer) clearTimeout(timer);
    },
  };
}

/**
 * Subscribes to `default` and `ROOTCA` on an Envoy SDS socket, ACKs every response like
 * Envoy does, and reconnects with backoff when the stream ends.
 */
export function sdsCredentialSource(address: string, nodeId = "meshvault-tunnel"): CredentialSource {
  const target = address.startsWith("unix:") ? address : `unix://${path.resolve(address)}`;
  const protos = loadSdsProtos();
  const client = new grpc.Client(target, grpc.credentials.createInsecure());
  const h = new (class extends Holder {
    set(v: TlsCredentials): void {
      this.update(v);
    }
  })();
  let chain: string | undefined;
  let key: string | undefined;
  let roots: string | undefined;
  let stopped = false;
  let call: grpc.ClientDuplexStream<DiscoveryRequest, DiscoveryResponse> | undefined;
  let retry: NodeJS.Timeout | undefined;
  // A local agent that restarts is back within seconds: reconnect quickly, at most every 5 s.
  const backoff = new Backoff({ initialMs: 200, maxMs: 5000 });
  const names = [DEFAULT_RESOURCE, ROOTCA_RESOURCE];

  const open = (): void => {
    if (stopped) return;
    const c = client.makeBidiStreamRequest<DiscoveryRequest, DiscoveryResponse>(
      SDS_METHODS.stream,
      (r) => protos.encodeDiscoveryRequest(r),
      (b) => protos.decodeDiscoveryResponse(b),
    );
    call = c;
    c.on("data", (resp: DiscoveryResponse) => {
      backoff.reset();
      for (const any of resp.resources) {
        if (any.type_url !== SECRET_TYPE_URL) continue;
        const s = protos.decodeSecret(any.value);
        const text = (d: { inline_bytes?: Uint8Array } | undefined): string | undefined =>
          d?.inline_bytes ? Buffer.from(d.inline_bytes).toString("utf8") : undefined;
        if (s.name === DEFAULT_RESOURCE) {
          chain = text(s.tls_certificate?.certificate_chain) ?? chain;
          key = text(s.tls_certificate?.private_key) ?? key;
        } else if (s.name === ROOTCA_RESOURCE) {
          roots = text(s.validation_context?.trusted_ca) ?? roots;
        }
      }
      c.write({
        version_info: resp.version_info,
        resource_names: names,
        type_url: SECRET_TYPE_URL,
        response_nonce: resp.nonce,
        node: { id: nodeId },
      });
      if (chain && key && roots) {
        const next = { certChainPem: chain, privateKeyPem: key, rootsPem: roots };
        if (consistent(next)) h.set(next);
      }
    });
    const again = (): void => {
      if (stopped || call !== c) return;
      call = undefined;
      retry = setTimeout(open, backoff.next());
      retry.unref();
    };
    c.on("error", again);
    c.on("end", again);
    c.write({ resource_names: names, type_url: SECRET_TYPE_URL, node: { id: nodeId } });
  };
  open();
  return {
    description: `SDS ${target}`,
    current: () => h.current(),
    onChange: (l) => h.onChange(l),
    ready: (t) => h.ready(t, `secrets from SDS ${target}`),
    close: async () => {
      stopped = true;
      if (retry) clearTimeout(retry);
      call?.cancel();
      client.close();
    },
  };
}

/** Wraps an in-process SecretSource (e.g. an agent's WorkloadIdentity.source). */
export function staticCredentialSource(
  src: { current(): TlsCredentials | undefined; onChange(l: () => void): () => void },
  description = "in-process",
): CredentialSource {
  const h = new (class extends Holder {
    set(v: TlsCredentials): void {
      this.update(v);
    }
  })();
  const pull = (): void => {
    const v = src.current();
    if (v) h.set(v);
  };
  const off = src.onChange(pull);
  pull();
  return {
    description,
    current: () => h.current(),
    onChange: (l) => h.onChange(l),
    ready: (t) => h.ready(t),
    close: async () => off(),
  };
}
