// The one redaction helper: long secrets go wherever they occur; short ones (a mistyped or
// test token) only where they stand alone, so they neither leak nor mangle the message.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { redactSecrets } from "../../src/log/redact.js";
import { JwtAuthenticator } from "../../src/identity/jwt.js";

test("redactSecrets: long secrets anywhere, short ones where they stand alone, never inside other words", () => {
  const uuid = "0f4c2b4e-dead-beef-cafe-0123456789ab";
  const cases: [string, string[], string][] = [
    [`secret_id ${uuid} refused`, [uuid], "secret_id [redacted] refused"],
    [`glued x${uuid}y`, [uuid], "glued x[redacted]y"],
    [
      "the token e is invalid: expected three parts",
      ["e"],
      "the token [redacted] is invalid: expected three parts",
    ],
    ['bad token "ab" in a table', ["ab"], 'bad token "[redacted]" in a table'],
    ["role a+b/c= denied", ["a+b/c="], "role [redacted] denied"],
    ["nothing to hide", ["", "zzz"], "nothing to hide"],
    // A secret containing another is replaced whole.
    ["abcdefghijklmnop", ["abc", "abcdefghijklmnop"], "[redacted]"],
  ];
  for (const [text, secrets, want] of cases) assert.equal(redactSecrets(text, secrets), want, text);
});

test("a one-letter bearer token: the JWT authenticator's error reads as written and does not show the token", async () => {
  const dir = mkdtempSync(join(tmpdir(), "meshvault-redact-"));
  try {
    writeFileSync(join(dir, "jwks.json"), JSON.stringify({ keys: [] }));
    const auth = new JwtAuthenticator({
      trustDomain: "cluster.local",
      issuer: "https://issuer.example",
      jwks: { file: join(dir, "jwks.json") },
    });
    const message = async (token: string): Promise<string> => {
      const err = await auth.authenticate({ authorization: `Bearer ${token}`, peerCertificates: [] }).then(
        () => undefined,
        (e: Error) => e,
      );
      assert.ok(err, `token ${JSON.stringify(token)} must be refused`);
      return err.message;
    };
    // The same refusal as for a longer token of the same shape: no letter of it replaced.
    assert.equal(await message("e"), await message("notajwtatall"));
    assert.match(await message("e"), /bearer token is not a signed JWT/);
    assert.doesNotMatch(await message("e"), /<token>|<redacted>/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
