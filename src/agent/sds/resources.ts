// The secrets one SDS socket serves, as the Any-wrapped Secret messages that go on the wire:
// `default` (the workload certificate chain and key) and `ROOTCA` (the trust anchors), named
// as istio-agent names them. Encoded once per distinct content.
import { createHash } from "node:crypto";
import { SECRET_TYPE_URL, type AnyMessage, type Secret } from "./proto.js";
import type { WorkloadSecrets } from "./source.js";
import { encodeSecret } from "./wire.js";

/** Resource name of the workload certificate chain + key (istio-agent's `default`). */
export const DEFAULT_RESOURCE = "default";
/** Resource name of the trust anchors (istio-agent's `ROOTCA`). */
export const ROOTCA_RESOURCE = "ROOTCA";
/** Every name served; any other is unknown (left out of responses, logged). */
export const SERVED_RESOURCES: readonly string[] = [DEFAULT_RESOURCE, ROOTCA_RESOURCE];

export const isServed = (name: string): boolean => SERVED_RESOURCES.includes(name);

export interface EncodedResource {
  name: string;
  any: AnyMessage;
  /** sha256 of the encoded Secret: compares content without keeping another copy of it. */
  fingerprint: string;
}

/** Encodes the served resources, re-encoding only when the secrets' content changed. */
export class ResourceEncoder {
  private encodedFor: WorkloadSecrets | undefined;
  private encoded = new Map<string, EncodedResource>();

  /** name -> encoded resource for `secrets` (compared by value: a source may reuse its object). */
  encode(secrets: WorkloadSecrets): ReadonlyMap<string, EncodedResource> {
    const last = this.encodedFor;
    if (
      last?.certChainPem !== secrets.certChainPem ||
      last.privateKeyPem !== secrets.privateKeyPem ||
      last.rootsPem !== secrets.rootsPem
    ) {
      this.encoded = encodeAll(secrets);
      this.encodedFor = { ...secrets };
    }
    return this.encoded;
  }
}

function encodeAll(secrets: WorkloadSecrets): Map<string, EncodedResource> {
  const all: Secret[] = [
    {
      name: DEFAULT_RESOURCE,
      tls_certificate: {
        certificate_chain: { inline_bytes: Buffer.from(secrets.certChainPem, "utf8") },
        private_key: { inline_bytes: Buffer.from(secrets.privateKeyPem, "utf8") },
      },
    },
    {
      name: ROOTCA_RESOURCE,
      validation_context: { trusted_ca: { inline_bytes: Buffer.from(secrets.rootsPem, "utf8") } },
    },
  ];
  const out = new Map<string, EncodedResource>();
  for (const secret of all) {
    const value = encodeSecret(secret);
    out.set(secret.name, {
      name: secret.name,
      any: { type_url: SECRET_TYPE_URL, value },
      fingerprint: createHash("sha256").update(value).digest("hex"),
    });
  }
  return out;
}

/** Response versions as istio-agent writes them: `<RFC3339 second>/<counter>`. */
export class VersionCounter {
  private n = 0;
  next(now = new Date()): string {
    return `${now.toISOString().replace(/\.\d{3}Z$/, "Z")}/${++this.n}`;
  }
}
