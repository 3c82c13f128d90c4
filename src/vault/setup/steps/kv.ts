// vault-kv (seed 001): the CA certificate and key, from PEM files, in KV.

import { X509Certificate, createPrivateKey, createPublicKey } from "node:crypto";
import { readFile } from "node:fs/promises";
import { readKv, writeKv, type KvReference } from "../../kv.js";
import type { KvSecretSpec } from "../spec.js";
import { SetupStepError, shq, type SetupStep } from "../step.js";
import { fsReason } from "../../../fs/errors.js";

async function readPem(file: string, field: string): Promise<string> {
  try {
    return await readFile(file, "utf8");
  } catch (e) {
    throw new SetupStepError(
      `cannot read the file for KV field "${field}", ${file} (${fsReason(e)}): fix the path`,
    );
  }
}

/**
 * The values to write, validated: the certificate parses and is a CA, the key
 * belongs to it, chain/root parse. A bad set is refused before Vault sees it.
 */
async function loadFields(
  s: KvSecretSpec,
  certField: string,
  keyField: string,
): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const f of s.fields) out[f.field] = await readPem(f.file, f.field);
  const certPem = out[certField];
  const keyPem = out[keyField];
  if (certPem !== undefined) {
    let cert: X509Certificate;
    try {
      cert = new X509Certificate(certPem);
    } catch (e) {
      throw new SetupStepError(`--ca-cert is not a PEM certificate (${(e as Error).message})`);
    }
    if (!cert.ca)
      throw new SetupStepError(
        `--ca-cert (${cert.subject}) is not a CA certificate: istiod signs with it, it needs CA:TRUE`,
      );
    if (keyPem !== undefined) {
      let pub: Buffer;
      try {
        pub = createPublicKey(createPrivateKey(keyPem)).export({ type: "spki", format: "der" });
      } catch (e) {
        throw new SetupStepError(`--ca-key is not a PEM private key (${(e as Error).message})`);
      }
      if (!pub.equals(cert.publicKey.export({ type: "spki", format: "der" }))) {
        throw new SetupStepError(
          `--ca-key does not belong to --ca-cert (${cert.subject}): pass the matching pair`,
        );
      }
    }
  }
  for (const f of ["chain", "root"]) {
    const v = out[f];
    if (v !== undefined && !/-----BEGIN CERTIFICATE-----/.test(v))
      throw new SetupStepError(`--${f} holds no PEM certificate`);
  }
  return out;
}

export function kvSecretStep(s: KvSecretSpec, certField: string, keyField: string): SetupStep {
  const ref: KvReference = {
    mount: s.mount,
    path: s.path,
    version: s.version,
    field: undefined,
    raw: `vault:${s.mount}/${s.version === 2 ? "data/" : ""}${s.path}`,
  };
  const args = s.fields.map((f) => `${f.field}=@${shq(f.file)}`).join(" ");
  return {
    title: `KV secret ${s.mount}/${s.path} (fields ${s.requiredFields.join(", ")})`,
    commands: s.fields.length
      ? [
          s.version === 2
            ? `vault kv put -mount=${shq(s.mount)} ${shq(s.path)} ${args}`
            : `vault write ${shq(`${s.mount}/${s.path}`)} ${args}`,
        ]
      : [
          `vault kv get -mount=${shq(s.mount)} ${shq(s.path)}   # must already hold ${s.requiredFields.join(", ")}`,
        ],
    async check(ctx) {
      const want = await loadFields(s, certField, keyField);
      const have = await readKv(ctx.client, ref);
      if (!have) {
        if (s.fields.length === 0) {
          throw new SetupStepError(
            `nothing at ${s.mount}/${s.path}: pass --ca-cert and --ca-key (PEM files) to write the CA istiod signs with`,
          );
        }
        return { state: "missing" };
      }
      const changed = Object.keys(want).filter((k) => have.data[k] !== want[k]);
      const absent = s.requiredFields.filter(
        (k) => typeof have.data[k] !== "string" && want[k] === undefined,
      );
      if (absent.length) {
        throw new SetupStepError(
          `${s.mount}/${s.path} lacks field(s) ${absent.join(", ")}: pass the matching PEM file flag(s)`,
        );
      }
      const version = have.version !== undefined ? `version ${have.version}` : "present";
      if (changed.length === 0) return { state: "ok", detail: version };
      return { state: "differs", detail: `${changed.join(", ")} changed (${version})` };
    },
    async apply(ctx) {
      const want = await loadFields(s, certField, keyField);
      const have = await readKv(ctx.client, ref);
      // Keep fields meshvault does not manage; a KV v2 write replaces the whole secret.
      const version = await writeKv(ctx.client, ref, { ...(have?.data ?? {}), ...want });
      return { detail: version !== undefined ? `version ${version}` : undefined };
    },
  };
}
