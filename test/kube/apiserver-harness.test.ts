// The real kube-apiserver harness works: TokenRequest issues projected tokens that
// a real TokenReview authenticates, and a forged token is refused.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { forgeServiceAccountToken, startKube } from "../helpers/kube.js";

interface TokenReviewStatus {
  authenticated?: boolean;
  user?: { username?: string; groups?: string[] };
  audiences?: string[];
  error?: string;
}

test("real kube-apiserver: TokenRequest + TokenReview", { timeout: 180_000 }, async (t) => {
  const started = Date.now();
  const kube = await startKube();
  t.after(() => kube.stop());
  t.diagnostic(`kube-apiserver ready at ${kube.server} in ${Date.now() - started} ms`);

  const version = await kube.request("GET", "/version");
  assert.match(String((version.body as { gitVersion?: unknown }).gitVersion), /^v1\.34\./);
  assert.match(await readFile(kube.kubeconfigPath, "utf8"), new RegExp(kube.server.replace(/\./g, "\\.")));

  const ns = "mesh-test";
  const sa = "workload";
  await kube.createNamespace(ns);
  await kube.createServiceAccount(ns, sa);
  const token = await kube.requestToken(ns, sa, ["istio-ca"], 600);

  const review = async (tok: string, audiences: string[]): Promise<TokenReviewStatus> => {
    const r = await kube.request("POST", "/apis/authentication.k8s.io/v1/tokenreviews", {
      apiVersion: "authentication.k8s.io/v1",
      kind: "TokenReview",
      spec: { token: tok, audiences },
    });
    return (r.body as { status?: TokenReviewStatus }).status ?? {};
  };

  const ok = await review(token, ["istio-ca"]);
  assert.equal(ok.authenticated, true, JSON.stringify(ok));
  assert.equal(ok.user?.username, `system:serviceaccount:${ns}:${sa}`);
  assert.ok(ok.user?.groups?.includes("system:serviceaccounts"), JSON.stringify(ok.user));
  assert.ok(ok.user?.groups?.includes(`system:serviceaccounts:${ns}`), JSON.stringify(ok.user));
  assert.deepEqual(ok.audiences, ["istio-ca"]);

  // The same token for another audience is refused.
  const otherAud = await review(token, ["some-other-audience"]);
  assert.notEqual(otherAud.authenticated, true, JSON.stringify(otherAud));

  // A forged token (right claims, unknown signing key) is refused.
  const forged = await review(forgeServiceAccountToken(ns, sa, kube.issuer), ["istio-ca"]);
  assert.notEqual(forged.authenticated, true, JSON.stringify(forged));

  // A token of a deleted service account is refused. kube-apiserver caches successful
  // token authentications for 10 s (keyed by token + audiences), so use a token that
  // was never reviewed, and allow the service-account informer a moment to notice.
  const unreviewed = await kube.requestToken(ns, sa, ["istio-ca"], 600);
  await kube.deleteServiceAccount(ns, sa);
  let deleted: TokenReviewStatus = {};
  for (let i = 0; i < 50; i++) {
    deleted = await review(unreviewed, ["istio-ca"]);
    if (deleted.authenticated !== true) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  assert.notEqual(deleted.authenticated, true, JSON.stringify(deleted));

  // The service account's own token is not admin: RBAC is on.
  await kube.createServiceAccount(ns, "plain");
  const plain = await kube.requestToken(ns, "plain", [kube.issuer]);
  const denied = await kube.request("GET", "/api/v1/namespaces", undefined, {
    token: plain,
    expectOk: false,
  });
  assert.equal(denied.status, 403);
});
