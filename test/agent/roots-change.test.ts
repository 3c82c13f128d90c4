// A new trust bundle (a root rotation's trust-both and retired steps rewrite the CA's root file)
// goes down an identity's outputs like a new certificate: the files are written (and retried
// until they are, with the output's state saying so), the hook runs, and when a renewal lands
// while the bundle is being written, the files end up holding the newer of the two. Before,
// the bundle was written beside the outputs, once, unretried: a rotation test's agent ended
// with its previous certificate on disk after a renewal, which expired under its tunnel.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { parseAgentConfig, startAgent, type IssuedInfo } from "../../src/agent/index.js";
import { readCredentialFiles, writeCredentialFiles } from "../../src/agent/file-output.js";
import { OutputChain, RetryingOutput, type OutputStatus } from "../../src/agent/outputs.js";
import type { WorkloadSecrets } from "../../src/agent/sds/source.js";
import { selfSignedRootPem } from "../helpers/pki-fixtures.js";
import { silentLog } from "../../src/log/logger.js";
import { waitFor } from "../helpers/wait.js";
import { startCaFixture, type CaFixture } from "./ca-fixture.js";

let ca: CaFixture;

before(async () => {
  ca = await startCaFixture();
});
after(async () => {
  await ca.dispose();
});

test("a new trust bundle goes through the file output (retried until written, reported meanwhile) and runs the hook", async () => {
  const tok = await ca.token("default", "bundle");
  const outDir = join(ca.dir, "bundle-out");
  const hookLog = join(ca.dir, "bundle-hook.log");
  // The agent's own copy of the root file, so the test can change it like a rotation does.
  const rootFile = join(ca.dir, "bundle-root.pem");
  writeFileSync(rootFile, ca.server.rootsPem());
  const agent = await startAgent(
    parseAgentConfig(
      {
        ca: { address: ca.address, rootCertFile: rootFile },
        keyAlgorithm: "ec-p256",
        certTtl: "1h",
        backoff: { initial: 0.05, max: 0.3 },
        identities: [
          {
            namespace: "default",
            serviceAccount: "bundle",
            tokenFile: tok,
            outDir,
            exec: `echo "$MESHVAULT_SPIFFE_ID" >> ${hookLog}`,
          },
        ],
      },
      "test",
    ),
    { rootsPollMs: 50 },
  );
  try {
    await agent.ready();
    const managed = agent.identities.get("default/bundle")!;
    const files = (): OutputStatus => managed.outputs[0]!.status();
    const hookRuns = (): number => readFileSync(hookLog, "utf8").trim().split("\n").length;
    await waitFor("the first hook run", async () => {
      try {
        return hookRuns() === 1;
      } catch {
        return false;
      }
    });
    const serial = managed.identity.issued()!.serial;

    // root-cert.pem cannot be replaced while a directory stands in its place (for root too).
    rmSync(join(outDir, "root-cert.pem"));
    mkdirSync(join(outDir, "root-cert.pem"));
    const bundle = ca.server.rootsPem() + selfSignedRootPem("next root", 3600);
    writeFileSync(rootFile, bundle);
    await waitFor(
      "the agent publishing the new bundle",
      async () => managed.identity.current()!.rootsPem === bundle,
    );
    await waitFor("the file output reporting the failed write", async () => files().lastError !== undefined);
    assert.equal(files().state, "failed");
    assert.match(files().lastError ?? "", /cannot write certificates to .*bundle-out/);
    const status = agent.status();
    assert.equal(status.ready, false);
    assert.match(
      status.reasons!.join("\n"),
      /files output .*bundle-out does not hold the current certificate/,
    );
    assert.equal(hookRuns(), 1, "the hook does not announce files that were not written");

    rmSync(join(outDir, "root-cert.pem"), { recursive: true });
    await waitFor("the files holding the new bundle", async () => files().state === "current");
    const onDisk = await readCredentialFiles(outDir);
    assert.equal(onDisk!.rootsPem, bundle);
    assert.equal(onDisk!.certChainPem, managed.identity.current()!.certChainPem, "the same certificate");
    assert.equal(managed.identity.issued()!.serial, serial, "no renewal was needed");
    // Ready once every output holds it: the hook has run (and exited) after the files.
    await waitFor("the agent ready again", async () => agent.status().ready);
    assert.equal(hookRuns(), 2, "the hook announced the new bundle");
  } finally {
    await agent.close();
  }
});

/** A file output whose writes wait for the test to release them (`writing`: the first has begun). */
function gatedFiles(dir: string): {
  output: RetryingOutput;
  writes: string[];
  writing: Promise<void>;
  release(): void;
} {
  let open: () => void = () => undefined;
  let gate = new Promise<void>((r) => (open = r));
  let began: () => void = () => undefined;
  const writing = new Promise<void>((r) => (began = r));
  const writes: string[] = [];
  const output = new RetryingOutput(
    "files",
    dir,
    async (secrets) => {
      began();
      await gate;
      await writeCredentialFiles(dir, secrets);
      writes.push(secrets.rootsPem);
    },
    { identity: "test", logger: silentLog },
  );
  return {
    output,
    writes,
    writing,
    release() {
      open();
      gate = Promise.resolve();
    },
  };
}

const info = (serial: string): IssuedInfo => ({
  spiffeId: "spiffe://cluster.local/ns/default/sa/test",
  serial,
  notBefore: new Date(),
  notAfter: new Date(Date.now() + 3600_000),
  renewAt: new Date(Date.now() + 1800_000),
  receivedAt: new Date(),
  path: [],
  via: "token",
});

async function someSecrets(): Promise<WorkloadSecrets> {
  const tok = await ca.token("default", "order");
  const dir = join(ca.dir, "order-src");
  const agent = await startAgent(
    parseAgentConfig(
      {
        ca: { address: ca.address, rootCertFile: ca.rootCertFile },
        keyAlgorithm: "ec-p256",
        identities: [{ namespace: "default", serviceAccount: "order", tokenFile: tok, outDir: dir }],
      },
      "test",
    ),
  );
  try {
    await agent.ready();
    return agent.identities.get("default/order")!.identity.current()!;
  } finally {
    await agent.close();
  }
}

test("a new bundle for the certificate being written is written after it: the newest publication is what the files hold", async () => {
  const dir = join(ca.dir, "order-1");
  const first = await someSecrets();
  const rebundled = { ...first, rootsPem: first.rootsPem + selfSignedRootPem("next root", 3600) };
  const g = gatedFiles(dir);
  const a = g.output.publish(first, info("01"));
  await g.writing;
  const b = g.output.publish(rebundled, info("01"));
  g.release();
  await Promise.all([a, b]);
  assert.deepEqual(g.writes, [first.rootsPem, rebundled.rootsPem]);
  assert.equal((await readCredentialFiles(dir))!.rootsPem, rebundled.rootsPem);
  assert.equal(g.output.status().state, "current");
});

test("a renewal landing while a bundle change is going down the outputs: no output is handed the older one afterwards", async () => {
  const dir = join(ca.dir, "order-2");
  const old = await someSecrets();
  const rebundled = { ...old, rootsPem: old.rootsPem + selfSignedRootPem("next root", 3600) };
  const renewed = { ...(await someSecrets()), rootsPem: rebundled.rootsPem };
  const g = gatedFiles(dir);
  const announced: string[] = [];
  const hook = new RetryingOutput(
    "hook",
    "record",
    async (_s, i) => {
      announced.push(i.serial);
    },
    { identity: "test", logger: silentLog },
  );
  const chain = new OutputChain([g.output, hook]);
  // The bundle change's write is held; the renewal arrives meanwhile.
  const a = chain.publish(rebundled, info("01"));
  await g.writing;
  const b = chain.publish(renewed, info("02"));
  g.release();
  await Promise.all([a, b]);
  const onDisk = await readCredentialFiles(dir);
  assert.equal(onDisk!.certChainPem, renewed.certChainPem, "the renewed certificate, not the previous one");
  assert.equal(onDisk!.privateKeyPem, renewed.privateKeyPem);
  assert.deepEqual(g.writes.length, 2, "the bundle change's write, then the renewal's");
  assert.deepEqual(announced, ["02"], "the hook announces only what the files hold");
  assert.equal(g.output.status().state, "current");
  assert.equal(hook.status().state, "current");
});
