// An approle role on a test OpenBao, with its role_id and a secret_id written to files the
// way `vault.auth.roleIdFile` / `secretIdFile` read them.
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { VaultClient } from "../../src/vault/index.js";

export interface ApproleCreds {
  roleIdFile: string;
  secretIdFile: string;
  secretId: string;
}

/** Writes role `role` (body: its settings) at auth/approle with `admin`; the files go to `dir`. */
export async function approleCreds(
  admin: VaultClient,
  dir: string,
  role: string,
  body: Record<string, unknown>,
): Promise<ApproleCreds> {
  await admin.write(`auth/approle/role/${role}`, body);
  const rid = await admin.read<{ role_id: string }>(`auth/approle/role/${role}/role-id`);
  const sid = await admin.write<{ secret_id: string }>(`auth/approle/role/${role}/secret-id`, {});
  const roleIdFile = join(dir, `${role}.role-id`);
  const secretIdFile = join(dir, `${role}.secret-id`);
  await writeFile(roleIdFile, `${rid?.data?.role_id}\n`);
  await writeFile(secretIdFile, `${sid?.data?.secret_id}\n`);
  return { roleIdFile, secretIdFile, secretId: sid?.data?.secret_id ?? "" };
}
