// `meshvault root rotate` for the vault-sign authority on a real OpenBao: prepare makes a new
// root issuer in the signing mount (pki_int, whose default issuer is an intermediate under
// pki's root); trust-both publishes old + new; switched signs at
// pki_int/issuer/<new>/sign/<role>; retired makes it pki_int's default issuer and publishes it
// alone. Every step through the CLI process; leaves judged by openssl.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { splitCertificates } from "../../src/pki/pem.js";
import { VaultClient } from "../../src/vault/index.js";
import { setupPki } from "../authority/vault-fixture.js";
import type { OpenBao } from "../helpers/openbao.js";
import type { ServerProcess } from "../helpers/server-process.js";
import {
  createCertificate as createCert,
  startOneServer,
  verifiesUnder,
  type OneServer,
} from "./one-server.js";
import { cli } from "../helpers/cli.js";
import { CLI_MS, rootArgs, rootStatus, rotateTo, serversApply } from "./drive.js";

let fx: OneServer | undefined;
let bao: OpenBao;
let admin: VaultClient;
let server: ServerProcess;
let oldRoot: string;

before(async () => {
  fx = await startOneServer(
    "sign",
    { type: "vault-sign", mount: "pki_int", role: "meshvault-workload" },
    async (b) => {
      admin = new VaultClient({ address: b.addr, skipVerify: false }, { token: b.rootToken });
      oldRoot = (await setupPki(admin)).rootPem;
    },
  );
  ({ bao, server } = fx);
});
after(async () => {
  admin?.close();
  await fx?.stop();
});

const createCertificate = (): Promise<string[]> => createCert(server);
const verifies = (chain: string[], root: string): boolean =>
  verifiesUnder(chain[0]!, chain.slice(1, -1), root);

test("vault-sign on OpenBao: root rotate takes the signing mount to a new root issuer and back to one root", async () => {
  const env = { ...process.env, VAULT_TOKEN: bao.rootToken };
  const args = rootArgs([server], []);
  await rotateTo("prepared", args, env);
  const st = (await rootStatus(args, env)).state!;
  assert.equal(st.authority, "vault-sign");
  assert.equal(st.old.pem.trim(), oldRoot.trim(), "the old root is the top of pki_int's chain");
  assert.equal(st.old.issuer, undefined, "not an issuer of pki_int (its default is the intermediate)");
  assert.ok(st.next.issuer);

  await rotateTo("trust-both", args, env);
  await serversApply([server], "trust-both");
  const both = await createCertificate();
  assert.equal(splitCertificates(both.at(-1)!).length, 2, "trust-both: bundle old + new");
  assert.ok(verifies(both, oldRoot), "trust-both: still signed under the old root");

  await rotateTo("switched", args, env);
  await serversApply([server], "switched");
  const switched = await createCertificate();
  assert.ok(verifies(switched, st.next.pem), "switched: signed by the new root issuer");
  assert.ok(!verifies(switched, oldRoot));
  assert.equal(splitCertificates(switched.at(-1)!).length, 2, "switched: bundle old + new");

  await rotateTo("retired", args, env);
  await serversApply([server], "retired");
  const def = await admin.read<{ default?: string }>("pki_int/config/issuers");
  assert.equal(def?.data?.default, st.next.issuer, "retired: the new issuer is pki_int's default");
  const retired = await createCertificate();
  assert.ok(verifies(retired, st.next.pem));
  assert.equal(splitCertificates(retired.at(-1)!).length, 1, "retired: the new root alone");
  assert.equal(
    splitCertificates(retired.at(-1)!)[0]!.trim(),
    st.next.pem.trim(),
    "retired: the bundle is the new root",
  );

  // A finished rotation stays finished until --new starts the next one, from the new root.
  const again = await cli(["root", "rotate", ...args], env, CLI_MS);
  assert.equal(again.code, 0, again.err);
  assert.match(again.out, /rotation finished.*root rotate --new/);
  assert.equal((await rootStatus(args, env)).state!.id, st.id, "nothing started without --new");
  const next = await cli(["root", "rotate", "--new", ...args], env, CLI_MS);
  assert.equal(next.code, 0, `${next.out}${next.err}`);
  assert.match(next.out, /prepared rotation/);
  const st2 = (await rootStatus(args, env)).state!;
  assert.notEqual(st2.id, st.id);
  assert.equal(st2.phase, "prepared");
  assert.equal(
    st2.old.fingerprint,
    st.next.fingerprint,
    "the second rotation starts from the first one's new root",
  );
  const busy = await cli(["root", "rotate", "--new", ...args], env, CLI_MS);
  assert.equal(busy.code, 1);
  assert.match(busy.err, /--new: rotation .* is at prepared, not finished/);
});
