// An agent learns its trust bundle from two sources that can arrive out of order during a root
// rotation: the roots in the CA's answer (as the server held them when it signed) and the root
// file it re-reads (the mounted istio-ca-root-cert). A CA answer signed before the server applied
// a phase but received after the agent read that phase's root file must not set the bundle back:
// at trust-both it would drop the new root (a peer with a leaf under it refused) until the next
// renewal; at retired it would bring back the retired root.
//
// A real server (local authority) driven through a rotation by the real operator's steps, a real
// agent on a copy of the root file the test updates like the kubelet does, and the agent's CA
// answers held by the test (the real server signs them) so the order is fixed, not timed.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { parseAgentConfig, startAgent, type RunningAgent } from "../../src/agent/index.js";
import { createCaClient, type CaClient } from "../../src/agent/ca-client.js";
import { readCredentialFiles } from "../../src/agent/file-output.js";
import { loadServerConfig } from "../../src/config/load.js";
import { parseCertificates } from "../../src/pki/certificate.js";
import { RotationOperator } from "../../src/rotation/operator.js";
import { fileRotationStore, type Phase, type RotationState } from "../../src/rotation/state.js";
import { waitFor, within } from "../helpers/wait.js";
import { startCaFixture, type CaFixture } from "./ca-fixture.js";

let ca: CaFixture;

before(async () => {
  ca = await startCaFixture({ rotationPoll: "0.1s" });
});
after(async () => {
  await ca.dispose();
});

/** The roots of a PEM bundle, as comparable PEM strings, in order. */
const roots = (pem: string): string[] => parseCertificates(pem).map((c) => c.pem);

/** A real CA client whose next answer, once armed, is held until the test releases it. */
function holdingClient(real: CaClient): {
  client: CaClient;
  hold(): { answered: Promise<string[]>; release(): void };
} {
  let held: { got(chain: string[]): void; released: Promise<void> } | undefined;
  return {
    client: {
      async createCertificate(call) {
        const chain = await real.createCertificate(call);
        const h = held;
        held = undefined;
        if (h) {
          h.got(chain);
          await h.released;
        }
        return chain;
      },
      close: () => real.close(),
    },
    hold() {
      let got: (chain: string[]) => void = () => undefined;
      const answered = new Promise<string[]>((r) => (got = r));
      let release: () => void = () => undefined;
      const released = new Promise<void>((r) => (release = r));
      held = { got, released };
      return { answered, release };
    },
  };
}

test("a CA answer signed before a rotation phase and received after its root file does not set the trust bundle back", async () => {
  const config = loadServerConfig({ env: {}, overrides: { dataDir: ca.dataDir } });
  const store = fileRotationStore(join(ca.dataDir, "root-rotation.json"));
  const operator = new RotationOperator({ config, store, servers: [], checks: [] });
  // Each step as `root rotate` takes it; its conditions (channels, old leaves) are the test's order.
  const step = async (next: Phase): Promise<RotationState> => {
    const state = await store.read();
    await operator.step({ state, servers: [], channels: [], oldLeaves: [], next, blockers: [] }, false);
    const s = (await store.read())!;
    await waitFor(`the server applying ${next}`, async () => {
      const v = ca.server.rotation!();
      return next === "retired" ? v.phase === "none" : v.phase === next && v.nextReady;
    });
    return s;
  };

  const tok = await ca.token("default", "late");
  const outDir = join(ca.dir, "late-out");
  // The agent's root file: the test copies the server's bundle into it, as the kubelet does.
  const rootFile = join(ca.dir, "late-root.pem");
  const publishRootFile = (): void => writeFileSync(rootFile, ca.server.rootsPem());
  publishRootFile();
  const real = await createCaClient({ address: ca.address, rootCertFile: rootFile });
  const ca2 = holdingClient(real);
  let agent: RunningAgent | undefined;
  try {
    agent = await startAgent(
      parseAgentConfig(
        {
          ca: { address: ca.address, rootCertFile: rootFile },
          keyAlgorithm: "ec-p256",
          certTtl: "1h",
          identities: [{ namespace: "default", serviceAccount: "late", tokenFile: tok, outDir }],
        },
        "test",
      ),
      { caClient: ca2.client, rootsPollMs: 50 },
    );
    await agent.ready();
    const identity = agent.identities.get("default/late")!.identity;
    const files = agent.identities.get("default/late")!.outputs[0]!;
    const bundle = (): string[] => roots(identity.current()!.rootsPem);
    /** Renews with the answer held: resolves once the server has answered, with the answer. */
    const heldRenewal = async (): Promise<{
      roots: string[];
      release(): Promise<void>;
    }> => {
      const h = ca2.hold();
      const renewal = identity.rotateNow();
      const chain = await within("the held CA answer", h.answered);
      return {
        roots: roots(chain.at(-1)!),
        release: async () => {
          const serial = identity.issued()!.serial;
          h.release();
          const info = await within("the renewal with the held answer", renewal);
          assert.notEqual(info.serial, serial, "the held answer is what the identity holds now");
        },
      };
    };

    const prepared = await step("prepared");
    const oldRoot = roots(prepared.old.pem);
    const newRoot = roots(prepared.next.pem);

    // trust-both: the answer was signed while the server still published the old root alone.
    const late1 = await heldRenewal();
    assert.deepEqual(late1.roots, oldRoot, "signed before trust-both");
    await step("trust-both");
    publishRootFile();
    await waitFor("the agent publishing the root file's old + new", async () => bundle().length === 2);
    await late1.release();
    assert.deepEqual(
      bundle().sort(),
      [...oldRoot, ...newRoot].sort(),
      "the late answer did not drop the new root the root file says to trust",
    );
    await waitFor(
      "the files holding the renewed certificate",
      async () => files.status().state === "current",
    );
    assert.deepEqual(roots((await readCredentialFiles(outDir))!.rootsPem).sort(), bundle().sort());

    // retired: the answer was signed in switched (old + new), the root file now says new alone.
    await step("switched");
    await identity.rotateNow(); // a leaf under the new root, as retiring requires of every agent
    const late2 = await heldRenewal();
    assert.deepEqual(late2.roots.sort(), [...oldRoot, ...newRoot].sort(), "signed in switched");
    await step("retired");
    await waitFor(
      "the server publishing the new root alone",
      async () => roots(ca.server.rootsPem()).join("") === newRoot.join(""),
    );
    publishRootFile();
    await waitFor("the agent publishing the root file's new root alone", async () => bundle().length === 1);
    await late2.release();
    assert.deepEqual(bundle(), newRoot, "the late answer did not bring back the retired root");
    await waitFor(
      "the files holding the renewed certificate",
      async () => files.status().state === "current",
    );
    assert.deepEqual(roots((await readCredentialFiles(outDir))!.rootsPem), newRoot);
  } finally {
    await agent?.close();
    real.close();
  }
});
