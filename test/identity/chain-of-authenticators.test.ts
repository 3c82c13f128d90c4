import { test } from "node:test";
import assert from "node:assert/strict";
import { authenticateCaller, NO_CREDENTIALS_MESSAGE } from "../../src/identity/chain-of-authenticators.js";
import {
  AuthenticationError,
  AuthenticatorUnavailableError,
  type AuthenticatedCaller,
  type Authenticator,
} from "../../src/identity/authenticator.js";
import { workloadId } from "../../src/pki/spiffe.js";

const creds = { authorization: "Bearer secret.token.value", peerCertificates: [] };

function fake(
  name: string,
  outcome: "skip" | "ok" | "bad" | "down" | "bug",
): Authenticator & { calls: number } {
  return {
    name,
    calls: 0,
    async authenticate(): Promise<AuthenticatedCaller | undefined> {
      this.calls++;
      switch (outcome) {
        case "skip":
          return undefined;
        case "ok":
          return { identity: workloadId("cluster.local", "ns", name), method: name };
        case "bad":
          throw new AuthenticationError(`${name} says no`);
        case "down":
          throw new AuthenticatorUnavailableError(`${name} backend down`);
        case "bug":
          throw new TypeError(`${name} crashed`);
      }
    },
  };
}

test("the first success wins and later authenticators are not consulted", async () => {
  const a = fake("a", "ok");
  const b = fake("b", "ok");
  assert.equal((await authenticateCaller([a, b], creds)).method, "a");
  assert.equal(b.calls, 0);
});

test("a failure does not stop a later success (bad cert, good token)", async () => {
  const caller = await authenticateCaller([fake("client-cert", "bad"), fake("jwt", "ok")], creds);
  assert.equal(caller.method, "jwt");
});

test("nobody claims the credentials: says what to send", async () => {
  await assert.rejects(
    authenticateCaller([fake("client-cert", "skip"), fake("jwt", "skip")], { peerCertificates: [] }),
    (e: Error) => e instanceof AuthenticationError && e.message === NO_CREDENTIALS_MESSAGE,
  );
  await assert.rejects(authenticateCaller([], creds), /no credentials: send `authorization: Bearer/);
});

test("one failure is reported as is; several are joined with their authenticator names", async () => {
  await assert.rejects(authenticateCaller([fake("client-cert", "skip"), fake("jwt", "bad")], creds), {
    name: "AuthenticationError",
    message: "jwt: jwt says no",
  });
  await assert.rejects(authenticateCaller([fake("client-cert", "bad"), fake("jwt", "bad")], creds), {
    name: "AuthenticationError",
    message: "caller authentication failed: client-cert: client-cert says no; jwt: jwt says no",
  });
});

test("an unavailable authenticator makes the outcome retryable unless another succeeds", async () => {
  await assert.rejects(
    authenticateCaller([fake("client-cert", "bad"), fake("jwt", "down")], creds),
    (e: Error) =>
      e instanceof AuthenticatorUnavailableError &&
      /client-cert says no; jwt: jwt backend down/.test(e.message),
  );
  assert.equal(
    (await authenticateCaller([fake("jwt", "down"), fake("client-cert", "ok")], creds)).method,
    "client-cert",
  );
});

test("an unexpected error is rethrown after the others had their turn", async () => {
  assert.equal((await authenticateCaller([fake("x", "bug"), fake("y", "ok")], creds)).method, "y");
  await assert.rejects(authenticateCaller([fake("x", "bug"), fake("y", "bad")], creds), TypeError);
});
