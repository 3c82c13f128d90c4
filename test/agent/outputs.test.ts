// The agent's health covers its outputs: `meshvault agent` (the CLI process) whose --out-dir
// cannot be created (its parent is a regular file, which fails for root too) is not ready,
// says why on /readyz and /_status, retries within seconds, and turns ready once the files
// hold the current certificate after the obstacle is removed.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import type { ChildProcess } from "node:child_process";
import { readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { parseCertificate } from "../../src/pki/certificate.js";
import { spawnCli } from "../helpers/cli.js";
import { Leftovers } from "../helpers/leftovers.js";
import { freePort } from "../helpers/ports.js";
import { waitFor } from "../helpers/wait.js";
import { startCaFixture, type CaFixture } from "./ca-fixture.js";

const leftovers = new Leftovers("MESHVAULT_KEEP_TEST_DIRS");
let ca: CaFixture;
let dir: string;
let tokenFile: string;

before(async () => {
  ca = await startCaFixture();
  dir = ca.dir;
  tokenFile = await ca.token("default", "sleep");
});

after(async () => {
  await ca?.dispose();
});

interface AgentStatusDoc {
  ready: boolean;
  reasons?: string[];
  identities: {
    serial?: string;
    state: string;
    outputs: { kind: string; target: string; state: string; lastError?: string; serial?: string }[];
  }[];
}

async function readyz(port: number): Promise<{ status: number; body: string } | undefined> {
  try {
    const r = await fetch(`http://127.0.0.1:${port}/readyz`);
    return { status: r.status, body: await r.text() };
  } catch {
    return undefined; // not listening yet
  }
}

test("an output that cannot be written makes the agent not ready; ready again within seconds of the fix", async () => {
  const blocker = join(dir, "blocker");
  writeFileSync(blocker, "a regular file where the output directory's parent should be");
  const outDir = join(blocker, "certs");
  const port = await freePort();
  const child: ChildProcess = spawnCli(
    [
      "agent",
      "--ca-address",
      ca.address,
      "--ca-root-cert",
      ca.rootCertFile,
      "--token-file",
      tokenFile,
      "--key-algorithm",
      "ec-p256",
      "--no-sds",
      "--out-dir",
      outDir,
      "--exec",
      "true",
      "--status-listen",
      `127.0.0.1:${port}`,
      "--log-level",
      "warn",
    ],
    { stdio: "ignore" },
  );
  leftovers.child(child);
  try {
    // Anchored on the certificate being issued: only then is the output's failure the reason.
    const notReady = await waitFor("not ready because of the files output", async () => {
      const r = await readyz(port);
      return r?.status === 503 && /files output/.test(r.body) && r;
    });
    assert.match(notReady.body, new RegExp(`files output ${outDir} does not hold the current certificate`));
    assert.match(notReady.body, /not a directory/);
    assert.match(notReady.body, /retrying at/);
    const status = (await (await fetch(`http://127.0.0.1:${port}/_status`)).json()) as AgentStatusDoc;
    assert.equal(status.ready, false);
    const id = status.identities[0]!;
    assert.equal(id.state, "valid", "the certificate itself is fine");
    const files = id.outputs.find((o) => o.kind === "files")!;
    assert.equal(files.state, "failed");
    assert.equal(files.serial, id.serial);
    const hook = id.outputs.find((o) => o.kind === "hook")!;
    assert.equal(hook.state, "failed");
    assert.match(hook.lastError ?? "", /waiting for the certificate files/);

    rmSync(blocker); // the fix: the directory can now be created
    await waitFor(
      "ready after the fix",
      async () => (await readyz(port))?.status === 200,
      10_000, // retries back off to at most 5 s
    );
    const after = (await (await fetch(`http://127.0.0.1:${port}/_status`)).json()) as AgentStatusDoc;
    assert.equal(after.ready, true);
    assert.deepEqual(
      after.identities[0]!.outputs.map((o) => [o.kind, o.state]),
      [
        ["files", "current"],
        ["hook", "current"],
      ],
    );
    const written = parseCertificate(readFileSync(join(outDir, "cert-chain.pem"), "utf8"));
    assert.equal(written.serialHex, after.identities[0]!.serial, "the files hold the current certificate");
  } finally {
    child.kill("SIGTERM");
    await new Promise((r) => child.once("exit", r));
  }
});
