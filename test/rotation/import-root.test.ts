// `meshvault root rotate --import-root` on a real OpenBao (vault-intermediate): seed 003's root,
// made outside Vault by `openssl req -x509 ... -subj "/O=my-org"`, becomes a new issuer of the
// root mount (`<rootMount>/issuers/import/bundle`); the server's next signer gets its
// intermediate from it, and after the switch a leaf verifies under that openssl root alone.
// A bundle whose key belongs to another certificate is refused before Vault is touched.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { VaultClient } from "../../src/vault/index.js";
import { cli } from "../helpers/cli.js";
import type { OpenBao } from "../helpers/openbao.js";
import { openssl, opensslVerify } from "../helpers/openssl.js";
import type { ServerProcess } from "../helpers/server-process.js";
import { createCertificate, startOneServer, type OneServer } from "./one-server.js";
import { CLI_MS, rootArgs, rootStatus, rotateTo, serversApply } from "./drive.js";

let fx: OneServer | undefined;
let dir: string;
let bao: OpenBao;
let server: ServerProcess;

before(async () => {
  fx = await startOneServer("import", {
    type: "vault-intermediate",
    mode: "csr",
    rootMount: "pki",
    ttl: "1h",
  });
  ({ dir, bao, server } = fx);
});
after(() => fx?.stop());

/** Seed 003, step 2: `openssl req -new -newkey rsa:4096 -x509 -sha256 -days 3650 -nodes -subj "/O=my-org"`. */
function seed003Root(name: string): { cert: string; key: string } {
  const cert = join(dir, `${name}-cert.pem`);
  const key = join(dir, `${name}-key.pem`);
  openssl([
    "req",
    "-new",
    "-newkey",
    "rsa:4096",
    "-x509",
    "-sha256",
    "-days",
    "3650",
    "-nodes",
    "-out",
    cert,
    "-keyout",
    key,
    "-subj",
    "/O=my-org",
  ]);
  return { cert: readFileSync(cert, "utf8"), key: readFileSync(key, "utf8") };
}

async function issuers(): Promise<string[]> {
  const admin = new VaultClient({ address: bao.addr, skipVerify: false }, { token: bao.rootToken });
  try {
    return await admin.list("pki/issuers");
  } finally {
    admin.close();
  }
}

test("vault-intermediate on OpenBao: --import-root makes seed 003's openssl root the new one; a mismatched bundle is refused", async () => {
  const env = { ...process.env, VAULT_TOKEN: bao.rootToken };
  const args = rootArgs([server], []);
  const root = seed003Root("ext");
  const other = seed003Root("other");

  // The key of another root: refused, naming the file and the cause; nothing imported.
  const wrong = join(dir, "wrong.pem");
  writeFileSync(wrong, root.cert + other.key);
  const before = await issuers();
  const bad = await cli(["root", "rotate", "--import-root", wrong, ...args], env, CLI_MS);
  assert.notEqual(bad.code, 0);
  assert.match(
    bad.err,
    new RegExp(`--import-root ${wrong}: the private key does not belong to the certificate`),
  );
  assert.doesNotMatch(bad.err, /PRIVATE KEY-----|\n\s+at /, "no key material or stack trace");
  assert.deepEqual(await issuers(), before, "nothing imported");
  assert.equal((await rootStatus(args, env)).state, undefined, "no rotation started");

  const bundle = join(dir, "bundle.pem");
  writeFileSync(bundle, root.cert + root.key);
  const dry = await cli(["root", "rotate", "--dry-run", "--import-root", bundle, ...args], env, CLI_MS);
  assert.match(dry.out, /import .*bundle\.pem as a new issuer of pki via pki\/issuers\/import\/bundle/);
  await rotateTo("prepared", [...args, "--import-root", bundle], env);
  const st = (await rootStatus(args, env)).state!;
  assert.equal(st.imported, true);
  assert.equal(st.next.pem.trim(), root.cert.trim(), "the new root is the imported certificate");
  assert.ok(st.next.issuer && (await issuers()).includes(st.next.issuer), "a new issuer of pki");

  // trust-both waits until the server's signer under the imported root is ready (its intermediate signed by it).
  await rotateTo("trust-both", args, env);
  await rotateTo("switched", args, env);
  await serversApply([server], "switched");
  const chain = await createCertificate(server);
  const [ok, out] = opensslVerify(root.cert, chain.slice(1, -1).join(""), chain[0]!, "any");
  assert.ok(ok, `a switched leaf verifies under the openssl-made root alone: ${out}`);
});
