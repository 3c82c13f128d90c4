// KV secrets (v1 and v2) and the `vault:` reference syntax used in configs:
//   vault:secret/data/pki/istiod#certificate
//   ^^^^^ ^^^^^^ ^^^^ ^^^^^^^^^^ ^^^^^^^^^^^
//   scheme mount v2   secret path field
// A `/data/` right after the mount means KV v2 (the API path, as in seed 001);
// without it the reference is KV v1 (`vault:kv/pki/istiod#certificate`).
// Mounts with slashes (`vault:team/kv/data/x#f`) work for v2 because the mount
// is everything before the first `/data/`; for v1 pass `mount` explicitly.

import type { RequestOptions, VaultClient } from "./client.js";
import { VaultConfigError, VaultNotFoundError } from "./errors.js";

export interface KvReference {
  mount: string;
  /** Secret path inside the mount (no `data/` prefix). */
  path: string;
  version: 1 | 2;
  /** Field after `#`, if any. */
  field: string | undefined;
  /** The reference as written, for messages. */
  raw: string;
}

export interface KvSecret {
  data: Record<string, unknown>;
  /** KV v2 only. */
  version: number | undefined;
  createdTime: string | undefined;
}

function bad(ref: string, why: string): VaultConfigError {
  return new VaultConfigError(
    `bad Vault reference ${JSON.stringify(ref)}: ${why}. Expected vault:<mount>/data/<path>#<field> (KV v2) ` +
      `or vault:<mount>/<path>#<field> (KV v1), e.g. vault:secret/data/pki/istiod#certificate`,
    { address: "(config)" },
  );
}

export interface ParseKvOptions {
  /** Require a `#field`. */
  requireField?: boolean;
  /** Mount for KV v1 references whose mount contains slashes. */
  mount?: string;
}

/** Parse `vault:<mount>/data/<path>#<field>`; throws VaultConfigError naming what is wrong. */
export function parseKvReference(ref: string, opts: ParseKvOptions = {}): KvReference {
  if (!ref.startsWith("vault:")) throw bad(ref, `it must start with "vault:"`);
  let rest = ref.slice("vault:".length).replace(/^\/+/, "");
  if (rest.startsWith("v1/")) rest = rest.slice(3);
  const hash = rest.indexOf("#");
  let field: string | undefined;
  if (hash >= 0) {
    field = rest.slice(hash + 1);
    rest = rest.slice(0, hash);
    if (!field) throw bad(ref, "the field after # is empty");
    if (field.includes("#")) throw bad(ref, "only one # is allowed");
  }
  if (opts.requireField && field === undefined)
    throw bad(ref, "a #<field> naming the key inside the secret is required");
  rest = rest.replace(/\/+$/, "");
  if (!rest) throw bad(ref, "the path is empty");
  if (rest.split("/").some((s) => s === "" || s === "." || s === ".."))
    throw bad(ref, "the path has an empty, . or .. segment");

  if (opts.mount) {
    const m = opts.mount.replace(/^\/+|\/+$/g, "");
    if (!rest.startsWith(`${m}/`)) throw bad(ref, `the path does not start with the mount "${m}"`);
    const inner = rest.slice(m.length + 1);
    if (inner.startsWith("data/")) return { mount: m, path: inner.slice(5), version: 2, field, raw: ref };
    return { mount: m, path: inner, version: 1, field, raw: ref };
  }
  const idx = rest.indexOf("/data/");
  if (idx > 0) {
    const path = rest.slice(idx + "/data/".length);
    if (!path) throw bad(ref, "nothing follows /data/");
    return { mount: rest.slice(0, idx), path, version: 2, field, raw: ref };
  }
  if (rest.includes("/metadata/")) throw bad(ref, "use the /data/ path of a KV v2 secret, not /metadata/");
  const slash = rest.indexOf("/");
  if (slash < 0) throw bad(ref, "it names only a mount, not a secret inside it");
  return { mount: rest.slice(0, slash), path: rest.slice(slash + 1), version: 1, field, raw: ref };
}

function toRef(ref: KvReference | string): KvReference {
  return typeof ref === "string" ? parseKvReference(ref) : ref;
}

/** Read a KV secret (v2: `<mount>/data/<path>`, v1: `<mount>/<path>`). Null when absent or deleted. */
export async function readKv(
  client: VaultClient,
  refOrString: KvReference | string,
  opts: RequestOptions & { version?: number } = {},
): Promise<KvSecret | null> {
  const ref = toRef(refOrString);
  if (ref.version === 2) {
    const q = opts.version !== undefined ? `?version=${opts.version}` : "";
    const r = await client.read<{
      data?: Record<string, unknown> | null;
      metadata?: {
        version?: number;
        created_time?: string;
        deletion_time?: string;
        destroyed?: boolean;
      } | null;
    }>(`${ref.mount}/data/${ref.path}${q}`, opts);
    // A deleted v2 version answers 404 with metadata, read() maps that to null.
    if (!r?.data?.data) return null;
    return {
      data: r.data.data,
      version: r.data.metadata?.version,
      createdTime: r.data.metadata?.created_time,
    };
  }
  const r = await client.read(`${ref.mount}/${ref.path}`, opts);
  if (!r?.data) return null;
  return { data: r.data, version: undefined, createdTime: undefined };
}

/** The string at `#field`; throws naming the reference when the secret or field is missing. */
export async function readKvField(
  client: VaultClient,
  refOrString: KvReference | string,
  opts: RequestOptions = {},
): Promise<{ value: string; version: number | undefined }> {
  const ref =
    typeof refOrString === "string" ? parseKvReference(refOrString, { requireField: true }) : refOrString;
  if (!ref.field) throw bad(ref.raw, "a #<field> naming the key inside the secret is required");
  const s = await readKv(client, ref, opts);
  const apiPath = ref.version === 2 ? `${ref.mount}/data/${ref.path}` : `${ref.mount}/${ref.path}`;
  if (!s) {
    throw new VaultNotFoundError(
      `${ref.raw}: no secret at ${apiPath} on Vault at ${client.address}. Write it (bao kv put ${ref.mount}/${ref.path} ${ref.field}=@file) ` +
        `or fix the reference.`,
      { address: client.address, path: apiPath, method: "GET", status: 404 },
    );
  }
  const v = s.data[ref.field];
  if (typeof v !== "string") {
    const keys = Object.keys(s.data).join(", ") || "none";
    throw new VaultNotFoundError(
      `${ref.raw}: the secret at ${apiPath} has no string field "${ref.field}" (fields: ${keys}). Fix the #field or the secret.`,
      { address: client.address, path: apiPath, method: "GET", status: 200 },
    );
  }
  return { value: v, version: s.version };
}

/** KV v2 current version from `<mount>/metadata/<path>` (cheap change detection). Undefined when absent. */
export async function kvMetadataVersion(
  client: VaultClient,
  refOrString: KvReference | string,
  opts: RequestOptions = {},
): Promise<number | undefined> {
  const ref = toRef(refOrString);
  if (ref.version !== 2) {
    throw new VaultConfigError(
      `${ref.raw} is a KV v1 reference: KV v1 has no versions, poll the secret itself`,
      {
        address: client.address,
      },
    );
  }
  const r = await client.read<{ current_version?: number }>(`${ref.mount}/metadata/${ref.path}`, opts);
  return r?.data?.current_version;
}

/**
 * Write a KV secret (v2 wraps it in `{data: ...}`); returns the new version for v2. `cas`
 * (v2 only): write only when the current version is this one (0: only when there is none);
 * otherwise Vault answers 400 "check-and-set parameter did not match the current version".
 */
export async function writeKv(
  client: VaultClient,
  refOrString: KvReference | string,
  data: Record<string, unknown>,
  opts: RequestOptions & { cas?: number | undefined } = {},
): Promise<number | undefined> {
  const ref = toRef(refOrString);
  const { cas, ...rest } = opts;
  if (cas !== undefined && ref.version !== 2)
    throw new VaultConfigError(`${ref.raw} is a KV v1 reference: KV v1 has no check-and-set`, {
      address: client.address,
    });
  if (ref.version === 2) {
    const r = await client.write<{ version?: number }>(
      `${ref.mount}/data/${ref.path}`,
      cas === undefined ? { data } : { data, options: { cas } },
      withSecrets(rest, data),
    );
    return r?.data?.version;
  }
  await client.write(`${ref.mount}/${ref.path}`, data, withSecrets(rest, data));
  return undefined;
}

// KV values are often keys: keep them out of any error message.
function withSecrets(opts: RequestOptions, data: Record<string, unknown>): RequestOptions {
  const values = Object.values(data).filter((v): v is string => typeof v === "string");
  return { ...opts, secrets: [...(opts.secrets ?? []), ...values] };
}
