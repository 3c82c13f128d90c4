// Auth methods and their roles: approle (seed 002), kubernetes (000, 001, 003)
// and jwt (offline validation against a JWKS URL or public keys).

import { readFile } from "node:fs/promises";
import { writeFileAtomic } from "../../../fs/atomic-write.js";
import type { AppRoleSetup, AuthSetup, JwtSetup, KubernetesSetup } from "../spec.js";
import { SetupStepError, diffFields, fmtTtl, kvArgs, shq, type SetupStep } from "../step.js";
import { fsReason } from "../../../fs/errors.js";

export function authEnableStep(method: AuthSetup["method"], mount: string): SetupStep {
  return {
    title: `${method} auth method at auth/${mount}/`,
    commands: [
      `vault auth list -format=json | grep -q ${shq(JSON.stringify(`${mount}/`))} || vault auth enable -path=${shq(mount)} ${method}`,
    ],
    async check(ctx) {
      const a = (await ctx.auths())[mount];
      if (!a) return { state: "missing" };
      if (a.type !== method) {
        throw new SetupStepError(
          `a "${a.type}" auth method is already mounted at auth/${mount}/, not ${method}: choose another mount (--auth-mount / vault.auth.mount)`,
        );
      }
      return { state: "ok" };
    },
    async apply(ctx) {
      await ctx.client.write(`sys/auth/${mount}`, { type: method });
      ctx.invalidate();
    },
  };
}

async function readText(file: string, what: string): Promise<string> {
  try {
    return (await readFile(file, "utf8")).trim();
  } catch (e) {
    throw new SetupStepError(`cannot read ${what} ${file} (${fsReason(e)}): fix the path`);
  }
}

export function kubernetesConfigStep(a: KubernetesSetup): SetupStep {
  const path = `auth/${a.mount}/config`;
  const cmd = [`vault write ${path} kubernetes_host=${shq(a.kubernetesHost ?? "<KUBERNETES_HOST>")}`];
  if (a.kubernetesCaCertFile) cmd.push(`kubernetes_ca_cert=@${shq(a.kubernetesCaCertFile)}`);
  if (a.tokenReviewerJwtFile) cmd.push(`token_reviewer_jwt=@${shq(a.tokenReviewerJwtFile)}`);
  return {
    title: `${path} (TokenReview at ${a.kubernetesHost ?? "the configured kubernetes_host"})`,
    commands: [cmd.join(" ")],
    async check(ctx) {
      const r = await ctx.client.read<Record<string, unknown>>(path);
      const host = r?.data?.["kubernetes_host"];
      if (a.kubernetesHost === undefined) {
        if (typeof host === "string" && host) return { state: "ok", detail: `kubernetes_host ${host}` };
        throw new SetupStepError(
          `${path} has no kubernetes_host: pass --kubernetes-host https://<api-server> (and --kubernetes-ca-cert, --token-reviewer-jwt-file when Vault runs outside the cluster)`,
        );
      }
      if (!r?.data || !host) return { state: "missing" };
      const want: Record<string, unknown> = { kubernetes_host: a.kubernetesHost };
      if (a.kubernetesCaCertFile)
        want["kubernetes_ca_cert"] = await readText(a.kubernetesCaCertFile, "--kubernetes-ca-cert");
      const d = diffFields(
        { ...r.data, kubernetes_ca_cert: String(r.data["kubernetes_ca_cert"] ?? "").trim() },
        want,
      );
      // The reviewer JWT is write-only in Vault: we can only see whether one is set.
      if (a.tokenReviewerJwtFile && r.data["token_reviewer_jwt_set"] !== true)
        d.push("token_reviewer_jwt: (unset) -> (from file)");
      return d.length ? { state: "differs", detail: d.join("; ") } : { state: "ok" };
    },
    async apply(ctx) {
      const body: Record<string, unknown> = { kubernetes_host: a.kubernetesHost };
      if (a.kubernetesCaCertFile)
        body["kubernetes_ca_cert"] = await readText(a.kubernetesCaCertFile, "--kubernetes-ca-cert");
      if (a.tokenReviewerJwtFile)
        body["token_reviewer_jwt"] = await readText(a.tokenReviewerJwtFile, "--token-reviewer-jwt-file");
      await ctx.client.write(path, body);
    },
  };
}

export function jwtConfigStep(a: JwtSetup): SetupStep {
  const path = `auth/${a.mount}/config`;
  const given = a.jwksUrl !== undefined || a.publicKeyFiles.length > 0;
  const cmd = [`vault write ${path}`];
  if (a.jwksUrl) cmd.push(`jwks_url=${shq(a.jwksUrl)}`);
  for (const f of a.publicKeyFiles) cmd.push(`jwt_validation_pubkeys=@${shq(f)}`);
  if (!given) cmd.push("jwks_url=<JWKS_URL>");
  if (a.boundIssuer) cmd.push(`bound_issuer=${shq(a.boundIssuer)}`);
  const want = async (): Promise<Record<string, unknown>> => {
    const w: Record<string, unknown> = {};
    if (a.jwksUrl) w["jwks_url"] = a.jwksUrl;
    if (a.publicKeyFiles.length) {
      w["jwt_validation_pubkeys"] = await Promise.all(
        a.publicKeyFiles.map((f) => readText(f, "--jwt-public-key")),
      );
    }
    if (a.boundIssuer) w["bound_issuer"] = a.boundIssuer;
    return w;
  };
  return {
    title: `${path} (${a.jwksUrl ? `JWKS ${a.jwksUrl}` : a.publicKeyFiles.length ? `${a.publicKeyFiles.length} public key(s), offline` : "as configured"})`,
    commands: [cmd.join(" ")],
    async check(ctx) {
      const r = await ctx.client.read<Record<string, unknown>>(path);
      const d = r?.data;
      const configured =
        !!d &&
        (!!d["jwks_url"] ||
          !!d["oidc_discovery_url"] ||
          ((d["jwt_validation_pubkeys"] as unknown[] | undefined)?.length ?? 0) > 0);
      if (!given) {
        if (configured) return { state: "ok" };
        throw new SetupStepError(
          `${path} has no keys to validate JWTs: pass --jwks-url <url> or --jwt-public-key <pem-file>`,
        );
      }
      if (!configured) return { state: "missing" };
      const have = {
        ...d,
        jwt_validation_pubkeys: ((d["jwt_validation_pubkeys"] as string[] | undefined) ?? []).map((k) =>
          k.trim(),
        ),
      };
      const diff = diffFields(have, await want());
      return diff.length ? { state: "differs", detail: diff.join("; ") } : { state: "ok" };
    },
    async apply(ctx) {
      await ctx.client.write(path, await want());
    },
  };
}

function roleFields(a: AuthSetup): Record<string, string | number | boolean | string[]> {
  const token = { token_policies: a.policies, token_ttl: a.tokenTtl, token_max_ttl: a.tokenMaxTtl };
  switch (a.method) {
    case "approle":
      return { ...token, bind_secret_id: true };
    case "kubernetes":
      return {
        ...token,
        bound_service_account_names: a.boundServiceAccountNames,
        bound_service_account_namespaces: a.boundServiceAccountNamespaces,
        ...(a.audience !== undefined ? { audience: a.audience } : {}),
      };
    case "jwt":
      return {
        ...token,
        role_type: "jwt",
        user_claim: a.userClaim,
        bound_audiences: a.boundAudiences,
        ...(a.boundSubject !== undefined ? { bound_subject: a.boundSubject } : {}),
      };
  }
}

export function authRoleStep(a: AuthSetup): SetupStep {
  const path = `auth/${a.mount}/role/${a.role}`;
  const fields = roleFields(a);
  const claimMappings =
    a.method === "jwt" && Object.keys(a.claimMappings).length ? a.claimMappings : undefined;
  const cliFields = { ...fields, token_ttl: fmtTtl(a.tokenTtl), token_max_ttl: fmtTtl(a.tokenMaxTtl) };
  const commands = claimMappings
    ? [
        `vault write ${path} - <<'EOF'\n${JSON.stringify({ ...fields, claim_mappings: claimMappings }, null, 2)}\nEOF`,
      ]
    : [`vault write ${path} ${kvArgs(cliFields)}`];
  return {
    title: `${a.method} role ${path} for ${a.who} (policies ${a.policies.join(", ")})`,
    commands,
    async check(ctx) {
      const r = await ctx.client.read<Record<string, unknown>>(path);
      if (!r?.data) return { state: "missing" };
      const d = diffFields(r.data, claimMappings ? { ...fields, claim_mappings: claimMappings } : fields);
      return d.length ? { state: "differs", detail: d.join("; ") } : { state: "ok" };
    },
    async apply(ctx) {
      await ctx.client.write(path, claimMappings ? { ...fields, claim_mappings: claimMappings } : fields);
    },
  };
}

async function readIfExists(file: string): Promise<string | undefined> {
  try {
    const v = (await readFile(file, "utf8")).trim();
    return v || undefined;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw new SetupStepError(`cannot read ${file} (${fsReason(e)})`);
  }
}

/** Print the role_id (not secret on its own) and, if asked, write it to a file. */
export function approleRoleIdStep(a: AppRoleSetup): SetupStep {
  const path = `auth/${a.mount}/role/${a.role}/role-id`;
  const roleId = async (ctx: Parameters<SetupStep["check"]>[0]): Promise<string> => {
    const r = await ctx.client.read<{ role_id?: string }>(path);
    if (!r?.data?.role_id) throw new SetupStepError(`${path} returned no role_id`);
    return r.data.role_id;
  };
  return {
    title: a.roleIdFile ? `approle role_id in ${a.roleIdFile}` : `approle role_id of ${a.role}`,
    commands: [`vault read -field=role_id ${path}${a.roleIdFile ? ` > ${shq(a.roleIdFile)}` : ""}`],
    async check(ctx) {
      const id = await roleId(ctx);
      const notes = [`role_id: ${id} (role ${a.role} at auth/${a.mount})`];
      if (!a.roleIdFile) return { state: "ok", notes };
      const have = await readIfExists(a.roleIdFile);
      if (have === id) return { state: "ok", notes };
      return { state: have === undefined ? "missing" : "differs", detail: "role_id file is out of date" };
    },
    async apply(ctx) {
      const id = await roleId(ctx);
      if (a.roleIdFile) await writeFileAtomic(a.roleIdFile, `${id}\n`, 0o600);
      return {
        notes: [`role_id: ${id} (role ${a.role} at auth/${a.mount})`, `role_id written to ${a.roleIdFile}`],
      };
    },
  };
}

/**
 * A secret_id in a 0600 file. A re-run keeps a secret_id that still works
 * (rotating would break nothing but surprises operators); --new-secret-id
 * issues a new one and destroys the old one.
 */
export function approleSecretIdStep(a: AppRoleSetup): SetupStep {
  const base = `auth/${a.mount}/role/${a.role}`;
  let old: string | undefined;
  return {
    title: `approle secret_id in ${a.secretIdFile} (0600)`,
    commands: [`(umask 077; vault write -f -field=secret_id ${base}/secret-id > ${shq(a.secretIdFile)})`],
    async check(ctx) {
      old = await readIfExists(a.secretIdFile);
      if (old === undefined) return { state: "missing" };
      const r = await ctx.client.write<Record<string, unknown>>(`${base}/secret-id/lookup`, {
        secret_id: old,
      });
      const valid = !!r?.data;
      if (!valid) {
        old = undefined;
        return {
          state: "differs",
          detail:
            "the secret_id in the file is not valid for this role (expired, used up or for another role)",
        };
      }
      if (a.newSecretId) return { state: "differs", detail: "--new-secret-id: rotating" };
      return {
        state: "ok",
        notes: [`secret_id in ${a.secretIdFile} still valid: kept (--new-secret-id rotates it)`],
      };
    },
    async apply(ctx) {
      const r = await ctx.client.write<{ secret_id?: string }>(`${base}/secret-id`, {});
      const sid = r?.data?.secret_id;
      if (!sid) throw new SetupStepError(`${base}/secret-id returned no secret_id`);
      await writeFileAtomic(a.secretIdFile, `${sid}\n`, 0o600);
      const notes = [`new secret_id written to ${a.secretIdFile} (mode 0600)`];
      if (old !== undefined) {
        await ctx.client.write(`${base}/secret-id/destroy`, { secret_id: old });
        notes.push("the previous secret_id was destroyed");
      }
      return { notes };
    },
  };
}
