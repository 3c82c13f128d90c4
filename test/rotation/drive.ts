// Drives `meshvault root rotate` (the CLI process) step by step, for the rotation test and
// bench: each step is retried until nothing blocks it; the blocked tries are returned.
import assert from "node:assert/strict";
import type { IssuedChain } from "../../src/authority/authority.js";
import { parseCertificate, parseCertificates } from "../../src/pki/certificate.js";
import { verifyChain } from "../../src/pki/chain.js";
import type { Observation } from "../../src/rotation/operator.js";
import type { RotationView } from "../../src/rotation/rotating-authority.js";
import type { Phase } from "../../src/rotation/state.js";
import { VaultClient, writeKv } from "../../src/vault/index.js";
import { cli, type CliResult } from "../helpers/cli.js";
import type { OpenBao } from "../helpers/openbao.js";
import type { ServerProcess } from "../helpers/server-process.js";
import { waitFor } from "../helpers/wait.js";

/** CLI processes start slowly on a loaded machine (tsx compiles on the fly): generous, not a timing claim. */
export const CLI_MS = 180_000;

/** `-c`, every replica as `--server`, every agent channel as `--check`. */
export function rootArgs(servers: ServerProcess[], checks: string[]): string[] {
  return [
    "-c",
    servers[0]!.configFile,
    ...servers.flatMap((s) => ["--server", `http://${s.http}`]),
    ...checks.flatMap((c) => ["--check", c]),
  ];
}

export async function rootStatus(args: string[], env: NodeJS.ProcessEnv): Promise<Observation> {
  const r = await cli(["root", "status", "-o", "json", ...args], env, CLI_MS);
  assert.equal(r.err, "", r.err);
  return JSON.parse(r.out) as Observation;
}

const DONE: Record<Phase, string> = {
  prepared: "prepared rotation",
  "trust-both": ": trust both:",
  switched: ": switch:",
  retired: ": retire:",
};

/** Runs `root rotate` until it takes the step to `phase`. */
export async function rotateTo(
  phase: Phase,
  args: string[],
  env: NodeJS.ProcessEnv,
  ms = 600_000,
): Promise<CliResult[]> {
  const blocked: CliResult[] = [];
  await waitFor(
    `root rotate to reach ${phase}`,
    async () => {
      const r = await cli(["root", "rotate", ...args], env, CLI_MS);
      if (r.code === 0 && r.out.includes(DONE[phase])) return true;
      assert.equal(r.code, 1, `root rotate: ${r.out}${r.err}`);
      assert.match(r.out, /blocked by:/);
      blocked.push(r);
      await new Promise((res) => setTimeout(res, 1000));
      return false;
    },
    ms,
  );
  return blocked;
}

/** Waits until every server's /rotation shows `phase` (retired: or finalised, "none"). */
export async function serversApply(servers: ServerProcess[], phase: Phase): Promise<void> {
  await waitFor(`servers applying ${phase}`, async () => {
    for (const s of servers) {
      const v = (await (await fetch(`http://${s.http}/rotation`)).json()) as RotationView;
      if (v.phase !== phase && !(phase === "retired" && v.phase === "none")) return false;
    }
    return true;
  });
}

/** A root at `mount` (default `pki`) on `bao` (the one a vault-intermediate mesh rotates away from). */
export async function mountRoot(bao: OpenBao, commonName: string, mount = "pki"): Promise<void> {
  const admin = new VaultClient({ address: bao.addr, skipVerify: false }, { token: bao.rootToken });
  try {
    await admin.write(`sys/mounts/${mount}`, { type: "pki", config: { max_lease_ttl: "87600h" } });
    await admin.write(`${mount}/root/generate/internal`, {
      common_name: commonName,
      key_type: "ec",
      ttl: "8760h",
    });
  } finally {
    admin.close();
  }
}

/**
 * A vault-kv CA (seed 001) at KV v2 `ref` (`vault:<mount>/data/<path>`, fields certificate,
 * privateKey, root): a key Vault exported at `keyMount` (a fresh PKI mount), signed by the root at `rootMount`.
 */
export async function storeKvCa(
  admin: VaultClient,
  ref: string,
  o: { rootMount: string; keyMount: string; commonName: string },
): Promise<void> {
  await admin.write(`sys/mounts/${o.keyMount}`, { type: "pki", config: { max_lease_ttl: "8760h" } });
  const g = await admin.write<{ csr: string; private_key: string }>(
    `${o.keyMount}/intermediate/generate/exported`,
    { common_name: o.commonName, key_type: "ec", key_bits: 256 },
  );
  const signed = await admin.write<{ certificate: string }>(`${o.rootMount}/root/sign-intermediate`, {
    csr: g!.data!.csr,
    common_name: o.commonName,
    ttl: "720h",
    format: "pem",
  });
  const root = await admin.read<{ certificate: string }>(`${o.rootMount}/cert/ca`);
  await writeKv(admin, ref, {
    certificate: `${signed!.data!.certificate.trim()}\n`,
    privateKey: g!.data!.private_key,
    root: `${root!.data!.certificate.trim()}\n`,
  });
}

/** Whether an authority's issued leaf chains, through its intermediates, to a root in `rootPem`. */
export function chainsTo(
  issued: Pick<IssuedChain, "leafPem" | "intermediatesPem">,
  rootPem: string,
): boolean {
  try {
    verifyChain(
      parseCertificate(issued.leafPem, "leaf"),
      issued.intermediatesPem.map((p) => parseCertificate(p, "intermediate")),
      parseCertificates(rootPem),
    );
    return true;
  } catch {
    return false;
  }
}
