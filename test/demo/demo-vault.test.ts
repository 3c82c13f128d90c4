// `meshvault demo --vault` against a real OpenBao: the demo's Vault provider
// starts a dev server, configures it with the vault setup code (seed 000's
// vault-sign mode, approle login), and the three outcomes hold with chains
// Vault issued. The provider is wrapped so the test can read Vault's CA
// certificates and the agents' files just before the provider stops Vault.
import { test } from "node:test";
import assert from "node:assert/strict";
import { X509Certificate } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { delimiter, dirname, join } from "node:path";
import { demoAuthority, runDemo, type DemoAuthorityProvider } from "../../src/demo/index.js";
import "../../src/demo/vault.js";
import { resolveBaoBinary } from "../helpers/openbao.js";
import { opensslVerify } from "../helpers/openssl.js";

// The provider looks for `bao` on PATH like a user's shell would.
process.env["PATH"] = `${dirname(resolveBaoBinary())}${delimiter}${process.env["PATH"] ?? ""}`;
for (const k of Object.keys(process.env)) if (/^(VAULT|BAO)_/.test(k)) delete process.env[k];

interface SeenInVault {
  address: string;
  rootPem: string;
  intermediatePem: string;
  secretId: string;
  sleepChainPem: string;
}

/** The real provider, with a look at Vault and the agents' files before its cleanup stops Vault. */
function observed(real: DemoAuthorityProvider): { provider: DemoAuthorityProvider; seen: () => SeenInVault } {
  let seen: SeenInVault | undefined;
  const provider: DemoAuthorityProvider = {
    name: real.name,
    available: () => real.available(),
    prepare: async (ctx) => {
      const p = await real.prepare(ctx);
      const vault = p.serverOverrides?.["vault"] as { address: string; auth: { secretIdFile: string } };
      return {
        ...p,
        cleanup: async () => {
          try {
            const get = async (path: string): Promise<string> => {
              const r = await fetch(`${vault.address}/v1/${path}`);
              assert.equal(r.status, 200, `GET ${path}`);
              return r.text();
            };
            seen = {
              address: vault.address,
              rootPem: await get("pki/ca/pem"),
              intermediatePem: await get("pki_int/ca/pem"),
              secretId: readFileSync(vault.auth.secretIdFile, "utf8").trim(),
              sleepChainPem: readFileSync(
                join(ctx.workDir, "sleep/var/run/secrets/workload-spiffe-credentials/cert-chain.pem"),
                "utf8",
              ),
            };
          } finally {
            await p.cleanup();
          }
        },
      };
    },
  };
  return {
    provider,
    seen: () => {
      assert.ok(seen, "the provider's cleanup ran");
      return seen;
    },
  };
}

const hexSerial = (s: string): string => s.toLowerCase().replace(/^0+/, "");

test("demo --vault: OpenBao dev server set up for vault-sign; three outcomes with Vault-issued chains; all cleaned up", async () => {
  const real = demoAuthority("vault");
  assert.ok(real, "src/demo/vault.ts registers the vault provider");
  assert.equal(await real.available(), true, "bao is on PATH");
  const { provider, seen } = observed(real);
  const lines: string[] = [];
  const result = await runDemo({ authority: provider, print: (l) => lines.push(l), keyAlgorithm: "ec-p256" });
  const out = lines.join("\n");

  assert.equal(result.ok, true, out);
  assert.deepEqual(
    result.outcomes.map((o) => o.ok),
    [true, true, true],
    out,
  );
  assert.match(result.outcomes[0]!.observed, /^HTTP 200$/);
  assert.match(result.outcomes[1]!.observed, /^connection failed/);
  assert.match(result.outcomes[2]!.observed, /denied/);
  assert.match(
    result.authority,
    /^OpenBao 2\.7\.2 dev server at http:\/\/127\.0\.0\.1:\d+, vault-sign mode \(seed 000\): pki_int\/sign\/meshvault-workload$/,
  );
  assert.match(out, /\n {2}\d+ changes\n/, "vault setup ran and changed things");
  assert.match(out, /created\s+approle secret_id in .*\(0600\)/);

  // Every chain: leaf <- Vault's pki_int intermediate <- Vault's pki root.
  const v = seen();
  const root = new X509Certificate(v.rootPem);
  const intermediate = new X509Certificate(v.intermediatePem);
  assert.ok(root.verify(root.publicKey), "pki/ca/pem is self-signed");
  assert.deepEqual(
    result.identities.map((i) => i.spiffeId),
    ["sleep", "httpbin", "not-sleep"].map((sa) => `spiffe://cluster.local/ns/default/sa/${sa}`),
  );
  for (const id of result.identities) {
    assert.equal(id.chain.length, 3, `${id.workload}: leaf, intermediate, root`);
    const [, int, top] = id.chain;
    assert.equal(hexSerial(top!.serial), hexSerial(root.serialNumber), `${id.workload}: root is Vault's`);
    assert.equal(
      hexSerial(int!.serial),
      hexSerial(intermediate.serialNumber),
      `${id.workload}: Vault's intermediate`,
    );
  }
  // And independently of our parser: openssl checks the chain sleep's agent wrote against Vault's root.
  const certs = v.sleepChainPem.match(/-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----\n?/g) ?? [];
  assert.ok(certs.length >= 2, "cert-chain.pem holds leaf and intermediate");
  for (const purpose of ["sslclient", "sslserver"]) {
    const [ok, msg] = opensslVerify(v.rootPem, certs.slice(1).join(""), certs[0]!, purpose);
    assert.ok(ok, `openssl verify -purpose ${purpose}: ${msg}`);
  }

  // Secrets never printed; Vault and the temp dir gone.
  assert.ok(!out.includes(v.secretId), "the secret_id is never printed");
  assert.doesNotMatch(out, /root token:/i);
  await assert.rejects(fetch(`${v.address}/v1/sys/health`), "the dev server was stopped");
  const work = /work dir (\S+)\)/.exec(out)?.[1];
  assert.ok(work && !existsSync(work), "temp dir removed");
});
