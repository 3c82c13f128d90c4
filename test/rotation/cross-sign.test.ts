// `meshvault root rotate --cross-sign` on a real OpenBao (vault-intermediate): prepare has the
// old issuer certify the new root (`<rootMount>/issuer/<old>/sign-self-issued`); in switched
// the CreateCertificate chain is leaf, new intermediate, cross-certificate, bundle. Judged by
// openssl (a peer holding only the old root, or only the new one) and by Istio's own agent
// (pilot-agent takes the chain and hands it out); retired drops the cross-certificate again.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { mintLocalToken } from "../../src/identity/local-issuer.js";
import { splitCertificates } from "../../src/pki/pem.js";
import type { RotationView } from "../../src/rotation/rotating-authority.js";
import { cli } from "../helpers/cli.js";
import { startIstioAgent } from "../helpers/istio-agent.js";
import type { OpenBao } from "../helpers/openbao.js";
import { openssl } from "../helpers/openssl.js";
import type { ServerProcess } from "../helpers/server-process.js";
import {
  createCertificate as createCert,
  startOneServer,
  verifiesUnder,
  type OneServer,
} from "./one-server.js";
import { CLI_MS, rootArgs, rootStatus, rotateTo, serversApply } from "./drive.js";

let fx: OneServer | undefined;
let bao: OpenBao;
let server: ServerProcess;

before(async () => {
  fx = await startOneServer("cross", {
    type: "vault-intermediate",
    mode: "csr",
    rootMount: "pki",
    ttl: "1h",
  });
  ({ bao, server } = fx);
});
after(() => fx?.stop());

const verifies = verifiesUnder;
const createCertificate = (): Promise<string[]> => createCert(server);

test("vault-intermediate on OpenBao: --cross-sign makes a switched leaf verify under the old root alone and the new root alone, through istio-agent too", async () => {
  const env = { ...process.env, VAULT_TOKEN: bao.rootToken };
  const args = rootArgs([server], []);
  const dry = await rotateDry(args, env);
  assert.match(dry, /cross-sign it with the old root \(pki\/issuer\/<old>\/sign-self-issued\)/);

  await rotateTo("prepared", [...args, "--cross-sign"], env);
  const st = (await rootStatus(args, env)).state!;
  assert.ok(st.cross, "the state records the cross-certificate");
  assert.match(
    openssl(["x509", "-noout", "-subject", "-issuer"], st.cross.pem),
    /subject=CN = mesh root 1 r-\S+\nissuer=CN = mesh root 1/,
  );
  await rotateTo("trust-both", args, env);
  await rotateTo("switched", args, env);
  await serversApply([server], "switched");
  const view = (await (await fetch(`http://${server.http}/rotation`)).json()) as RotationView;
  assert.equal(view.sendsCross, st.cross.fingerprint);

  // The CreateCertificate response: leaf, new intermediate, cross-certificate, bundle (old + new).
  const chain = await createCertificate();
  assert.equal(chain.length, 4, chain.join("\n"));
  const [leaf, intermediate, cross, bundle] = chain as [string, string, string, string];
  assert.equal(cross.trim(), st.cross.pem.trim());
  assert.equal(splitCertificates(bundle).length, 2, "bundle holds old + new");
  assert.ok(verifies(leaf, [intermediate, cross], st.old.pem), "a peer holding only the old root");
  assert.ok(verifies(leaf, [intermediate, cross], st.next.pem), "a peer holding only the new root");
  assert.ok(!verifies(leaf, [intermediate], st.old.pem), "without the cross-certificate the old root fails");

  // Istio's agent takes the response as is (last element = its trust bundle) and hands the chain out.
  const agent = await startIstioAgent({
    mode: "proxyless",
    caAddress: `localhost:${server.grpc.split(":")[1]}`,
    caRootPem: bundle,
    token: await mintLocalToken({
      dataDir: server.dataDir,
      trustDomain: "cluster.local",
      namespace: "grpc",
      serviceAccount: "echo",
    }),
    namespace: "grpc",
    serviceAccount: "echo",
    secretTtl: "20s",
  });
  try {
    for (const f of ["cert-chain.pem", "root-cert.pem"])
      await agent.waitForFile(join(agent.outputCertsDir, f), 60_000);
    const out = (f: string): string => readFileSync(join(agent.outputCertsDir, f), "utf8");
    const [aLeaf, ...aRest] = splitCertificates(out("cert-chain.pem"));
    assert.ok(
      aRest.some((c) => c.trim() === st.cross!.pem.trim()),
      "istio-agent's chain carries the cross-certificate",
    );
    assert.ok(verifies(aLeaf!, aRest, st.old.pem), "istio-agent's chain, old root only");
    assert.ok(verifies(aLeaf!, aRest, st.next.pem), "istio-agent's chain, new root only");
    assert.equal(splitCertificates(out("root-cert.pem")).length, 2);
  } finally {
    await agent.stop();
  }

  await rotateTo("retired", args, env);
  await serversApply([server], "retired");
  const retired = await createCertificate();
  assert.equal(retired.length, 3, "retired: leaf, new intermediate, bundle; no cross-certificate");
  assert.ok(verifies(retired[0]!, [retired[1]!], st.next.pem));
});

async function rotateDry(args: string[], env: NodeJS.ProcessEnv): Promise<string> {
  const r = await cli(["root", "rotate", "--dry-run", "--cross-sign", ...args], env, CLI_MS);
  assert.equal(r.code, 0, r.err);
  return r.out;
}
