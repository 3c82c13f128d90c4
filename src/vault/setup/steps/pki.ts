// PKI steps: mounts, the root CA (generated or imported), config/urls, the
// signing intermediate for vault-sign, and the workload role.

import { X509Certificate, createPrivateKey, createPublicKey } from "node:crypto";
import { readFile } from "node:fs/promises";
import {
  SetupStepError,
  diffFields,
  fmtTtl,
  kvArgs,
  shq,
  type SetupStep,
  type StepContext,
} from "../step.js";
import {
  ACCESSOR_PLACEHOLDER,
  type IntermediateSpec,
  type PkiMountSpec,
  type RoleSpec,
  type RootSource,
} from "../spec.js";
import { fsReason } from "../../../fs/errors.js";

/** `vault secrets enable pki` + tune max lease TTL. */
export function pkiMountStep(m: PkiMountSpec, purpose: string): SetupStep {
  return mountStep(m.path, "pki", undefined, m.maxLeaseTtl, `${purpose}: PKI secrets engine at ${m.path}/`);
}

/** A KV secrets engine (v2 unless told otherwise). */
export function kvMountStep(path: string, version: 1 | 2): SetupStep {
  return mountStep(path, "kv", version, undefined, `KV v${version} secrets engine at ${path}/`);
}

function mountStep(
  path: string,
  type: "pki" | "kv",
  kvVersion: 1 | 2 | undefined,
  maxLeaseTtl: number | undefined,
  title: string,
): SetupStep {
  const enableCmd =
    type === "kv"
      ? `vault secrets enable -path=${shq(path)} ${kvVersion === 1 ? "-version=1 kv" : "kv-v2"}`
      : `vault secrets enable -path=${shq(path)} pki`;
  // Guarded, so that the script replays on a Vault that already has the mount (dev servers have secret/).
  const commands = [
    `vault secrets list -format=json | grep -q ${shq(JSON.stringify(`${path}/`))} || ${enableCmd}`,
  ];
  if (maxLeaseTtl !== undefined)
    commands.push(`vault secrets tune -max-lease-ttl=${fmtTtl(maxLeaseTtl)} ${shq(path)}`);
  return {
    title: maxLeaseTtl !== undefined ? `${title} (max lease TTL ${fmtTtl(maxLeaseTtl)})` : title,
    commands,
    async check(ctx) {
      const m = (await ctx.mounts())[path];
      if (!m) return { state: "missing" };
      if (m.type !== type && !(type === "kv" && m.type === "generic")) {
        throw new SetupStepError(
          `a "${m.type}" secrets engine is already mounted at ${path}/, not ${type}: choose another mount path, or remove it (vault secrets disable ${path}) if it is unused`,
        );
      }
      if (type === "kv") {
        const v = m.options?.["version"] === "2" ? 2 : 1;
        if (v !== kvVersion) {
          throw new SetupStepError(
            `${path}/ is KV v${v} but the references say v${kvVersion}: write the reference as ${
              v === 2 ? `vault:${path}/data/<path>#field` : `vault:${path}/<path>#field`
            }`,
          );
        }
      }
      if (maxLeaseTtl === undefined) return { state: "ok" };
      const tune = await ctx.client.read<{ max_lease_ttl?: number }>(`sys/mounts/${path}/tune`);
      const have = tune?.data?.max_lease_ttl ?? 0;
      if (have !== maxLeaseTtl)
        return { state: "differs", detail: `max lease TTL ${fmtTtl(have)} -> ${fmtTtl(maxLeaseTtl)}` };
      return { state: "ok" };
    },
    async apply(ctx, current) {
      if (current.state === "missing") {
        const body: Record<string, unknown> = { type };
        if (kvVersion !== undefined) body["options"] = { version: String(kvVersion) };
        await ctx.client.write(`sys/mounts/${path}`, body);
        ctx.invalidate();
      }
      if (maxLeaseTtl !== undefined) {
        await ctx.client.write(`sys/mounts/${path}/tune`, { max_lease_ttl: fmtTtl(maxLeaseTtl) });
      }
    },
  };
}

/** The PEM of the mount's default issuer, or undefined when the mount has none yet. */
export async function readCaPem(ctx: StepContext, mount: string): Promise<string | undefined> {
  const raw = await ctx.client.requestRaw("GET", `${mount}/ca/pem`, undefined, {
    noAuth: true,
    acceptStatus: [204, 400, 404],
  });
  return raw.status === 200 && raw.body.includes("BEGIN CERTIFICATE") ? raw.body : undefined;
}

function describe(pem: string): string {
  const c = new X509Certificate(pem);
  const left = Math.floor((Date.parse(c.validTo) - Date.now()) / 86_400_000);
  return `${c.subject.replace(/\n/g, ", ")}, expires ${new Date(c.validTo).toISOString().slice(0, 10)} (${left} days left)`;
}

/** PEM bundle for config/ca: one CA certificate plus its private key; validated before sending. */
export async function readRootBundle(file: string): Promise<{ bundle: string; certPem: string }> {
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (e) {
    throw new SetupStepError(`cannot read --import-root ${file} (${fsReason(e)}): fix the path`);
  }
  const certs = text.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
  const key = text.match(
    /-----BEGIN (?:RSA |EC )?PRIVATE KEY-----[\s\S]+?-----END (?:RSA |EC )?PRIVATE KEY-----/,
  );
  if (certs.length === 0 || !key) {
    throw new SetupStepError(
      `--import-root ${file} must hold the root certificate and its private key (cat root-key.pem root-cert.pem > ${file}); found ${certs.length} certificate(s) and ${key ? "a" : "no"} key`,
    );
  }
  const certPem = certs[0]!;
  const cert = new X509Certificate(certPem);
  if (!cert.ca)
    throw new SetupStepError(
      `--import-root ${file}: the certificate (${cert.subject}) is not a CA (basicConstraints CA:TRUE missing)`,
    );
  const pub = createPublicKey(createPrivateKey(key[0])).export({ type: "spki", format: "der" });
  if (!pub.equals(cert.publicKey.export({ type: "spki", format: "der" }))) {
    throw new SetupStepError(
      `--import-root ${file}: the private key does not belong to the certificate ${cert.subject}`,
    );
  }
  return { bundle: `${key[0]}\n${certPem}\n`, certPem };
}

export function rootCaStep(mount: string, source: RootSource, trustDomain: string): SetupStep {
  if (source.kind === "import") {
    return {
      title: `root CA at ${mount}/ imported from ${source.bundleFile}`,
      commands: [`vault write ${shq(mount)}/config/ca pem_bundle=@${shq(source.bundleFile)}`],
      async check(ctx) {
        const { certPem } = await readRootBundle(source.bundleFile);
        const have = await readCaPem(ctx, mount);
        if (!have) return { state: "missing" };
        if (new X509Certificate(have).fingerprint256 !== new X509Certificate(certPem).fingerprint256) {
          throw new SetupStepError(
            `${mount}/ already has a different root CA (${describe(have)}); meshvault never replaces a root: ` +
              `import into a new mount (--root-mount), or remove the old issuer yourself if you really mean to`,
          );
        }
        return { state: "ok", detail: describe(have) };
      },
      async apply(ctx) {
        const { bundle } = await readRootBundle(source.bundleFile);
        await ctx.client.write(`${mount}/config/ca`, { pem_bundle: bundle });
        const pem = await readCaPem(ctx, mount);
        return { detail: pem ? describe(pem) : undefined };
      },
    };
  }
  const body = {
    common_name: source.commonName,
    issuer_name: source.issuerName,
    // A SPIFFE trust-domain ID (no path) on a signing cert is allowed by the SVID spec.
    uri_sans: `spiffe://${trustDomain}`,
    key_type: source.keyType,
    key_bits: source.keyBits,
    ttl: fmtTtl(source.ttl),
  };
  return {
    title: `root CA at ${mount}/ (generated in Vault: ${source.keyType === "ec" ? `EC P-${source.keyBits}` : `RSA ${source.keyBits}`}, ${fmtTtl(source.ttl)})`,
    commands: [`vault write ${shq(mount)}/root/generate/internal ${kvArgs(body)}`],
    async check(ctx) {
      const have = await readCaPem(ctx, mount);
      // An existing root is kept whatever its name: replacing it would break every issued identity.
      return have ? { state: "ok", detail: describe(have) } : { state: "missing" };
    },
    async apply(ctx) {
      const r = await ctx.client.write<{ certificate?: string }>(`${mount}/root/generate/internal`, body);
      return { detail: r?.data?.certificate ? describe(r.data.certificate) : undefined };
    },
  };
}

export function urlsStep(mount: string, publicAddress: string): SetupStep {
  const want = {
    issuing_certificates: [`${publicAddress}/v1/${mount}/ca`],
    crl_distribution_points: [`${publicAddress}/v1/${mount}/crl`],
  };
  return {
    title: `issuing/CRL URLs of ${mount}/ (${publicAddress})`,
    commands: [`vault write ${shq(mount)}/config/urls ${kvArgs(want)}`],
    async check(ctx) {
      const r = await ctx.client.read<Record<string, unknown>>(`${mount}/config/urls`);
      const d = diffFields(r?.data ?? {}, want);
      if (d.length === 0) return { state: "ok" };
      const empty = !(r?.data?.["issuing_certificates"] as unknown[] | undefined)?.length;
      return { state: empty ? "missing" : "differs", detail: d.join("; ") };
    },
    async apply(ctx) {
      await ctx.client.write(`${mount}/config/urls`, want);
    },
  };
}

/** vault-sign: an intermediate at `spec.mount`, signed by the root at `rootMount`, Vault holding its key. */
export function intermediateStep(spec: IntermediateSpec, rootMount: string, trustDomain: string): SetupStep {
  const m = spec.mount.path;
  const gen = { common_name: spec.commonName, key_type: spec.keyType, key_bits: spec.keyBits };
  const sign = {
    common_name: spec.commonName,
    ttl: fmtTtl(spec.ttl),
    format: "pem_bundle",
    uri_sans: `spiffe://${trustDomain}`,
    // It signs leaves only.
    max_path_length: 0,
  };
  return {
    title: `signing intermediate CA at ${m}/ (signed by ${rootMount}/, ${fmtTtl(spec.ttl)})`,
    commands: [
      `vault write -field=csr ${shq(m)}/intermediate/generate/internal ${kvArgs(gen)} > ${m}.csr`,
      `vault write -field=certificate ${shq(rootMount)}/root/sign-intermediate csr=@${m}.csr ${kvArgs(sign)} > ${m}.pem`,
      `vault write ${shq(m)}/intermediate/set-signed certificate=@${m}.pem`,
    ],
    async check(ctx) {
      const have = await readCaPem(ctx, m);
      if (!have) return { state: "missing" };
      const rootPem = await readCaPem(ctx, rootMount);
      const cert = new X509Certificate(have);
      if (!rootPem || !cert.verify(new X509Certificate(rootPem).publicKey)) {
        return {
          state: "differs",
          detail: `the intermediate at ${m}/ is not signed by the root at ${rootMount}/: issuing a new one`,
        };
      }
      if (Date.parse(cert.validTo) <= Date.now())
        return { state: "differs", detail: `it expired ${cert.validTo}: issuing a new one` };
      return { state: "ok", detail: describe(have) };
    },
    async apply(ctx) {
      const csr = await ctx.client.write<{ csr?: string }>(`${m}/intermediate/generate/internal`, gen);
      if (!csr?.data?.csr) throw new SetupStepError(`${m}/intermediate/generate/internal returned no CSR`);
      const signed = await ctx.client.write<{ certificate?: string; issuing_ca?: string }>(
        `${rootMount}/root/sign-intermediate`,
        { ...sign, csr: csr.data.csr },
      );
      const certificate = signed?.data?.certificate;
      if (!certificate)
        throw new SetupStepError(`${rootMount}/root/sign-intermediate returned no certificate`);
      const set = await ctx.client.write<{
        imported_issuers?: string[] | null;
        mapping?: Record<string, string> | null;
      }>(`${m}/intermediate/set-signed`, { certificate });
      // Make the new intermediate the default issuer, also when it replaces an old one.
      const mapping = set?.data?.mapping ?? {};
      const withKey = Object.entries(mapping).find(([, key]) => key !== "")?.[0];
      if (withKey) await ctx.client.write(`${m}/config/issuers`, { default: withKey });
      const pem = await readCaPem(ctx, m);
      return { detail: pem ? describe(pem) : undefined };
    },
  };
}

/** `fields` with the accessor in place of ACCESSOR_PLACEHOLDER. */
function withAccessor(fields: RoleSpec["fields"], accessor: string): RoleSpec["fields"] {
  const sub = (v: string): string => v.split(ACCESSOR_PLACEHOLDER).join(accessor);
  return Object.fromEntries(
    Object.entries(fields).map(([k, v]) => [
      k,
      typeof v === "string" ? sub(v) : Array.isArray(v) ? v.map(sub) : v,
    ]),
  );
}

export function roleStep(role: RoleSpec): SetupStep {
  const path = `${role.mount}/roles/${role.name}`;
  let command = `vault write ${shq(path)} ${kvArgs({ ...role.fields, max_ttl: fmtTtl(Number(role.fields["max_ttl"])) })}`;
  const commands: string[] = [];
  if (role.accessorOf) {
    // Replays in a shell: the accessor is read from Vault, then spliced into the quoted value.
    commands.push(`ACCESSOR="$(vault read -field=accessor ${shq(`sys/auth/${role.accessorOf}`)})"`);
    command = command.split(ACCESSOR_PLACEHOLDER).join(`'"$ACCESSOR"'`);
  }
  commands.push(command);
  const resolved = async (ctx: StepContext): Promise<RoleSpec["fields"]> => {
    if (!role.accessorOf) return role.fields;
    const mount = (await ctx.auths())[role.accessorOf];
    if (!mount?.accessor)
      throw new SetupStepError(
        `role ${path} names callers of auth/${role.accessorOf}/, which is not enabled yet: run setup again after it is`,
      );
    return withAccessor(role.fields, mount.accessor);
  };
  return {
    title: `${role.purpose} role ${path} (URI SANs ${String(role.fields["allowed_uri_sans"])
      .split(ACCESSOR_PLACEHOLDER)
      .join(`<auth/${role.accessorOf ?? ""} accessor>`)}, max TTL ${fmtTtl(Number(role.fields["max_ttl"]))})`,
    commands,
    async check(ctx) {
      const r = await ctx.client.read<Record<string, unknown>>(path);
      if (!r?.data) return { state: "missing" };
      const d = diffFields(r.data, await resolved(ctx));
      return d.length ? { state: "differs", detail: d.join("; ") } : { state: "ok" };
    },
    async apply(ctx) {
      // A role write replaces the role: every field is sent.
      await ctx.client.write(path, await resolved(ctx));
    },
  };
}
