// `meshvault cacerts` follows a root rotation: stock istiod's plug-in CA in the real
// apiserver's Secret istio-system/cacerts, fed from a real OpenBao, while `meshvault root
// rotate --server none` (the CLI process; no meshvault server in this shape) takes the steps.
// trust-both: root-cert.pem = old + new, intermediate still under the old root; switched: the
// intermediate comes from the new root; retired: root-cert.pem = the new root alone. `root
// status --check kube:...` sees the Secret holding old + new. Each state judged by openssl.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import type { ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { stringify } from "yaml";
import { splitCertificates } from "../../src/pki/pem.js";
import type { RotationState } from "../../src/rotation/state.js";
import { spawnCli } from "../helpers/cli.js";
import { startKube, type KubeEnv } from "../helpers/kube.js";
import { startOpenBao, type OpenBao } from "../helpers/openbao.js";
import { openssl, opensslVerify } from "../helpers/openssl.js";
import { waitFor } from "../helpers/wait.js";
import { mountRoot, rootStatus, rotateTo } from "./drive.js";

let dir: string;
let kube: KubeEnv;
let bao: OpenBao;
let cacerts: ChildProcess | undefined;
let cacertsOut = "";

before(async () => {
  dir = mkdtempSync(join(tmpdir(), "meshvault-cacerts-rotation-"));
  [kube, bao] = await Promise.all([startKube(), startOpenBao()]);
  await kube.createNamespace("istio-system");
  await mountRoot(bao, "mesh root 1");
});
after(async () => {
  if (cacerts && cacerts.exitCode === null) {
    const exited = new Promise((r) => cacerts!.once("exit", r));
    cacerts.kill("SIGTERM");
    await exited;
  }
  await Promise.all([kube?.stop(), bao?.stop()]);
  rmSync(dir, { recursive: true, force: true });
});

async function secretFiles(): Promise<Record<string, string> | undefined> {
  const r = await kube.request("GET", "/api/v1/namespaces/istio-system/secrets/cacerts", undefined, {
    expectOk: false,
  });
  if (r.status !== 200) return undefined;
  const data = (r.body as { data: Record<string, string> }).data;
  return Object.fromEntries(Object.entries(data).map(([k, v]) => [k, Buffer.from(v, "base64").toString()]));
}

const fingerprints = (pem: string): string[] =>
  splitCertificates(pem).map((c) => openssl(["x509", "-noout", "-fingerprint", "-sha256"], c).trim());

/** openssl: ca-cert.pem chains through cert-chain.pem to `rootPem` alone. */
function under(files: Record<string, string>, rootPem: string): boolean {
  return opensslVerify(rootPem, files["cert-chain.pem"]!, files["ca-cert.pem"]!, "any")[0];
}

test("cacerts follows root rotate: root-cert.pem old -> old+new -> (new intermediate) -> new, seen by root status", async () => {
  const config = join(dir, "mesh.yaml");
  writeFileSync(
    config,
    stringify({
      dataDir: join(dir, "data"),
      authority: { type: "vault-intermediate", mode: "csr", rootMount: "pki" },
      vault: { address: bao.addr, auth: { method: "token" } },
      certificates: { defaultTtl: "20s", maxTtl: "20s" },
      rotation: { pollInterval: "1s" },
    }),
  );
  const env = { ...process.env, VAULT_TOKEN: bao.rootToken };
  cacerts = spawnCli(["cacerts", "-c", config, "--kubeconfig", kube.kubeconfigPath, "--ttl", "1h"], {
    env,
    stdio: ["ignore", "pipe", "pipe"],
  });
  cacerts.stdout?.on("data", (b: Buffer) => (cacertsOut += b.toString()));
  cacerts.stderr?.on("data", (b: Buffer) => (cacertsOut += b.toString()));
  const first = await waitFor("the cacerts Secret", () => secretFiles(), 180_000);
  assert.equal(splitCertificates(first["root-cert.pem"]!).length, 1, "before: the old root alone");

  const args = ["-c", config, "--server", "none"];
  const check = ["--check", `cluster=kube:,kubeconfig=${kube.kubeconfigPath},cacerts=istio-system/cacerts`];
  const secretHolds = async (): Promise<string | undefined> =>
    (await rootStatus([...args, ...check], env)).channels.find((c) =>
      c.name.includes("secret istio-system/cacerts"),
    )?.holds;

  await rotateTo("prepared", args, env);
  const s = (await rootStatus(args, env)).state as RotationState;
  assert.equal(await secretHolds(), "old", "prepared: nothing changes for istiod");

  await rotateTo("trust-both", args, env);
  await waitFor(
    "root status seeing the Secret as old+new",
    async () => (await secretHolds()) === "old+new",
    60_000,
  );
  const both = (await secretFiles())!;
  assert.deepEqual(fingerprints(both["root-cert.pem"]!).sort(), fingerprints(s.old.pem + s.next.pem).sort());
  assert.ok(under(both, s.old.pem), "trust-both: the intermediate is still the old root's");
  assert.equal(
    both["ca-key.pem"],
    first["ca-key.pem"],
    "trust-both: the same intermediate key (only the bundle moved)",
  );

  await rotateTo("switched", args, env);
  const switched = await waitFor(
    "an intermediate under the new root in the Secret",
    async () => {
      const f = await secretFiles();
      return f && under(f, s.next.pem) && f;
    },
    60_000,
  );
  assert.ok(!under(switched, s.old.pem), "switched: the intermediate no longer chains to the old root");
  assert.equal(splitCertificates(switched["root-cert.pem"]!).length, 2, "switched: old + new still trusted");
  // istiod verifies its plug-in CA against root-cert.pem (both roots).
  assert.ok(
    opensslVerify(
      switched["root-cert.pem"]!,
      switched["cert-chain.pem"]!,
      switched["ca-cert.pem"]!,
      "any",
    )[0],
  );
  const st = await rootStatus([...args, ...check], env);
  assert.deepEqual(st.oldLeaves, [], "the Secret's CA no longer chains to the old root only");

  // Without servers the retire bound is the switch + certificates.maxTtl.
  const blocked = await rotateTo("retired", args, env);
  assert.ok(
    blocked.some((b) => /no meshvault server to ask \(--server none\)/.test(b.out)),
    blocked.map((b) => b.out).join("\n"),
  );
  const retired = await waitFor(
    "root-cert.pem holding the new root alone",
    async () => {
      const f = await secretFiles();
      return f && splitCertificates(f["root-cert.pem"]!).length === 1 && f;
    },
    60_000,
  );
  assert.deepEqual(fingerprints(retired["root-cert.pem"]!), fingerprints(s.next.pem));
  assert.ok(under(retired, s.next.pem));
  assert.match(cacertsOut, /root rotation/);
});
