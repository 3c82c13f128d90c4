// The root rotates under load: `meshvault root rotate` (the CLI process) takes a mesh from one
// root to another through prepare -> trust-both -> switch -> retire while workload pairs keep
// opening mutual TLS connections through tunnels; then an intermediate rotates. Counted per
// phase: requests (each a new handshake through both tunnels) attempted and failed. Goal 0.
// Local authority (one server), and vault-intermediate on a real OpenBao with two replicas,
// cross-signed (switched chains end in the new root certified by the old one).
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PHASES } from "../../src/rotation/state.js";
import { cli } from "../helpers/cli.js";
import { startOpenBao, type OpenBao } from "../helpers/openbao.js";
import { startServerProcess, type ServerProcess } from "../helpers/server-process.js";
import { waitFor } from "../helpers/wait.js";
import { CLI_MS, mountRoot, rootArgs, rootStatus, rotateTo, serversApply } from "./drive.js";
import { startPairs } from "./workload-pairs.js";

const PAIRS = Number(process.env["MESHVAULT_ROTATION_PAIRS"] ?? 3);
/** Keep the temp dir (servers' logs, the pairs' journal.jsonl and files) for a look afterwards. */
const KEEP = !!process.env["MESHVAULT_KEEP_TEST_DIRS"];
let dir: string;
let bao: OpenBao | undefined;
const cleanups: (() => Promise<void>)[] = [];

before(() => {
  dir = mkdtempSync(join(tmpdir(), "meshvault-rotation-"));
});
after(async () => {
  for (const c of cleanups.reverse()) await c().catch(() => undefined);
  await bao?.stop();
  if (KEEP) process.stdout.write(`# kept ${dir}\n`);
  else rmSync(dir, { recursive: true, force: true });
});

// Short leaf lifetimes: retire waits for the longest old-root leaf to expire, and agents renew
// at half-life, so the rotation's length follows certTtl (bench/rotation.ts runs longer ones).
// vault-intermediate runs 10 s leaves under a 30 s intermediate renewed at half life. A failed
// request prints what both tunnels logged and the certificates both sides held (that is how
// 10 s leaves once failing here was found to be the agent's file output: a trust-bundle write
// racing a renewal left the previous, soon expired, certificate on disk).
const common = {
  certificates: { defaultTtl: "10s", maxTtl: "15s" },
  servingCertificate: { ttl: "1h" },
  rotation: { pollInterval: "1s" },
};

/** Stops the server at the end; with KEEP, its log is left at <dir>/<name>.log. */
function cleanupServer(s: ServerProcess): void {
  cleanups.push(async () => {
    await s.stop();
    if (KEEP) writeFileSync(join(dir, `${s.name}.log`), s.output());
  });
}

async function runRotation(
  t: { diagnostic(m: string): void },
  servers: ServerProcess[],
  env: NodeJS.ProcessEnv,
  intermediate: (() => Promise<void>) | undefined,
  /** More `root rotate` flags for the prepare step (e.g. --cross-sign). */
  prepareFlags: string[] = [],
): Promise<void> {
  const pairs = await startPairs({
    pairs: PAIRS,
    dir: join(dir, `pairs-${servers[0]!.name}`),
    cas: servers.map((s) => ({
      grpc: s.grpc,
      dataDir: s.dataDir,
      rootCertFile: join(s.dataDir, "root-cert.pem"),
    })),
    certTtl: "10s",
    rootsPollMs: 300,
  });
  cleanups.push(() => pairs.stop());
  const args = rootArgs(servers, pairs.checks);
  const dry = await cli(["root", "rotate", "--dry-run", ...args], env, CLI_MS);
  assert.equal(dry.code, 0, dry.err);
  for (const p of PHASES) assert.match(dry.out, new RegExp(`^  ${p}: `, "m"));
  assert.match(dry.out, /no root rotation recorded/);

  pairs.run();
  await pairs.progress(5);
  const before = await rootStatus(args, env);
  assert.equal(before.state, undefined);
  for (const phase of PHASES) {
    const blocked = await rotateTo(phase, phase === "prepared" ? [...args, ...prepareFlags] : args, env);
    pairs.phase = phase;
    t.diagnostic(
      `${phase}: ${blocked.length} blocked tries${blocked.length ? `, last: ${blocked.at(-1)!.out.split("blocked by:")[1]?.trim().split("\n")[0]}` : ""}`,
    );
    if (phase === "switched") {
      const s = await rootStatus(args, env);
      assert.equal(s.state?.phase, "switched");
      for (const c of s.channels) assert.equal(c.holds, "old+new", c.name);
      // The retire time is computed from the longest leaf signed under the old root, and shown.
      assert.ok(s.retireAfter, "status shows when the old root may be retired");
      assert.ok(
        new Date(s.retireAfter.at).getTime() > Date.parse(s.state.history.at(-1)!.at),
        s.retireAfter.basis,
      );
    }
    await serversApply(servers, phase);
    await pairs.progress(5);
  }
  const done = await rootStatus(args, env);
  assert.equal(done.next, "done");
  await waitFor(
    "every channel holding the new root alone",
    async () => {
      const s = await rootStatus(args, env);
      return s.channels.every((c) => c.holds === "new") && s;
    },
    120_000,
  );
  if (intermediate) {
    pairs.phase = "intermediate";
    await intermediate();
    await pairs.progress(5);
  }
  if (servers.length > 1) {
    const roots = await Promise.all(servers.map(async (s) => (await fetch(`http://${s.http}/roots`)).text()));
    assert.ok(
      roots.every((r) => r === roots[0]),
      "replicas publish identical bundles",
    );
    const v = await cli(
      ["verify", ...servers.map((s) => `${s.name}=ca:http://${s.http}`), ...pairs.checks.slice(0, 2)],
      env,
      CLI_MS,
    );
    assert.equal(v.code, 0, v.out + v.err);
  }
  await pairs.stop();
  process.stdout.write(`# ${servers[0]!.name}: ${PAIRS} pairs\n${pairs.report().replace(/^/gm, "# ")}\n`);
  const why = pairs.failures();
  for (const [label, c] of pairs.counts) {
    assert.ok(c.attempted > 0, `requests in phase ${label}`);
    assert.equal(
      c.failed,
      0,
      `failed requests in phase ${label}: ${[...c.reasons].map(([r, k]) => `${k} x ${r}`).join("; ")}\n${why}`,
    );
  }
}

test("local authority: the root rotates under continuous mTLS load with 0 failed handshakes or requests", async (t) => {
  const s = await startServerProcess("local", dir, { authority: { type: "local" }, ...common });
  cleanupServer(s);
  await runRotation(t, [s], process.env, undefined);
});

test("vault-intermediate on OpenBao, two replicas, --cross-sign: the root rotates, then an intermediate, with 0 failures; replicas agree", async (t) => {
  bao = await startOpenBao();
  await mountRoot(bao, "mesh root 1");
  const env = { ...process.env, VAULT_TOKEN: bao.rootToken };
  const cfg = {
    authority: { type: "vault-intermediate", mode: "csr", rootMount: "pki", ttl: "30s", renewAt: 0.5 },
    vault: { address: bao.addr, auth: { method: "token" } },
    ...common,
  };
  const replicas = await Promise.all(
    ["vault-a", "vault-b"].map((n) => startServerProcess(n, dir, cfg, { VAULT_TOKEN: bao!.rootToken })),
  );
  for (const r of replicas) cleanupServer(r);
  await runRotation(
    t,
    replicas,
    env,
    async () => {
      const renewals = (s: ServerProcess): number => s.output().split("renewed the intermediate").length;
      const start = replicas.map(renewals);
      await waitFor(
        "an intermediate renewal on every replica",
        async () => replicas.every((s, i) => renewals(s) > start[i]!),
        90_000,
      );
    },
    ["--cross-sign"],
  );
});
