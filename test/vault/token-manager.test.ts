// The Vault token manager's schedule, driven by a fake clock against a real OpenBao: every
// renew-self and login is a real request, but when they happen is decided by the test, so
// nothing here waits for a lease to run out. (test/vault/client.test.ts keeps the real-time
// proof on short TTLs.)
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { once } from "node:events";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  TokenAuth,
  VaultClient,
  authMethodFromConfig,
  VaultTokenManager,
  connectVault,
  readKv,
  tokenAction,
  tokenRenewDelayMs,
  writeKv,
  type ConnectedVault,
  type TokenManagerOptions,
  type VaultConnection,
} from "../../src/vault/index.js";
import { FakeClock, settle } from "../helpers/fake-clock.js";
import { startOpenBao, type OpenBao } from "../helpers/openbao.js";
import { waitFor, within } from "../helpers/wait.js";
import { approleCreds, type ApproleCreds as Creds } from "../helpers/approle.js";
import { startHangingPeer } from "../helpers/hanging-peer.js";

const FAST = { baseDelayMs: 10, maxDelayMs: 50 };
const HOUR = 3600_000;
/** 2/3 of a one-hour lease. */
const RENEW_AT = 2400_000;

let bao: OpenBao;
let root: VaultClient;
let dir: string;
const open: { close(): void }[] = [];

function conn(extra: Partial<VaultConnection> = {}): VaultConnection {
  return { address: bao.addr, skipVerify: false, auth: { method: "token" }, ...extra };
}

before(async () => {
  // Persistent (not dev) so the seal test can unseal again.
  bao = await startOpenBao({ persistent: true });
  root = new VaultClient(conn(), { token: bao.rootToken, retry: FAST });
  dir = await mkdtemp(join(tmpdir(), "meshvault-token-manager-"));
  await root.write("sys/policies/acl/app-reader", {
    policy: `path "secret/data/app/*" { capabilities = ["read"] }`,
  });
  await root.write("sys/auth/approle", { type: "approle" });
  await writeKv(root, "vault:secret/data/app/db", { user: "app" });
});

after(async () => {
  for (const o of open) o.close();
  root?.close();
  await bao?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

function approle(role: string, body: Record<string, unknown>): Promise<Creds> {
  return approleCreds(root, dir, role, { token_policies: ["app-reader"], ...body });
}

/** An approle-backed client + manager on `clock`; the backoff's jitter pinned (0.5 -> 3/4 of nominal). */
function connect(creds: Creds, clock: FakeClock, tokens: TokenManagerOptions = {}): ConnectedVault {
  const v = connectVault(
    conn({ auth: { method: "approle", roleIdFile: creds.roleIdFile, secretIdFile: creds.secretIdFile } }),
    { retry: FAST, tokens: { clock, random: () => 0.5, ...tokens } },
  );
  open.push(v);
  return v;
}

/** Records the manager's events in order. */
function record(v: ConnectedVault): string[] {
  const events: string[] = [];
  v.tokens.on("login", () => events.push("login"));
  v.tokens.on("renew", () => events.push("renew"));
  v.tokens.on("failure", (_e, action) => events.push(`failure:${action}`));
  return events;
}

/** Moves the clock by `ms`, waits for the manager's `event` that the move sets off, then for the loop's bookkeeping. */
async function advanceUntil(
  clock: FakeClock,
  v: ConnectedVault,
  ms: number,
  event: "login" | "renew" | "failure",
) {
  const seen = once(v.tokens, event);
  await clock.advance(ms);
  const args = await within(`the token manager's ${event} event`, seen);
  await settle(); // the event fires inside the attempt; the next timer is set just after
  return args;
}

test("what a renewal is: renew-self while Vault grants the full lease, then a login; a fixed token only renews", () => {
  for (const [renewable, capped, canRelogin, want] of [
    [true, false, true, "renew"],
    [true, true, true, "login"],
    [false, false, true, "login"],
    [true, false, false, "renew"],
    [true, true, false, "renew"],
    [false, false, false, "none"],
  ] as const)
    assert.equal(
      tokenAction({ renewable, capped }, canRelogin),
      want,
      `${renewable} ${capped} ${canRelogin}`,
    );
  assert.equal(tokenRenewDelayMs(3600, 2 / 3), RENEW_AT);
  // Short leases: at least 1 s before the end, never sooner than 0.5 s.
  assert.equal(tokenRenewDelayMs(3, 2 / 3), 2000);
  assert.equal(tokenRenewDelayMs(2, 0.9), 1000);
  assert.equal(tokenRenewDelayMs(1, 2 / 3), 500);
});

test("renew-self at 2/3 of the lease, asking for the login lease again, and again after each renewal", async () => {
  const clock = new FakeClock();
  const v = connect(await approle("renewing", { token_ttl: "1h", token_max_ttl: "24h" }), clock);
  const events = record(v);
  const info = await v.tokens.start();
  assert.equal(info.leaseSeconds, 3600);
  assert.equal(info.renewable, true);
  assert.deepEqual(clock.pending(), [RENEW_AT]);
  assert.equal(v.tokens.nextAttemptAt(), clock.now() + RENEW_AT);

  await clock.advance(RENEW_AT - 1);
  assert.deepEqual(clock.pending(), [1], "nothing before the renewal time");
  const [renewed] = await advanceUntil(clock, v, 1, "renew");
  assert.equal(renewed.renewals, 1);
  assert.equal(renewed.leaseSeconds, 3600, "the full login lease granted again");
  assert.equal(renewed.accessor, info.accessor, "the same token");
  assert.deepEqual(clock.pending(), [RENEW_AT], "the next renewal from the new lease");
  await advanceUntil(clock, v, RENEW_AT, "renew");
  assert.deepEqual(events, ["login", "renew", "renew"]);
  // The renewed token is the one requests use.
  const self = await v.client.read<{ accessor: string; ttl: number }>("auth/token/lookup-self");
  assert.equal(self?.data?.accessor, info.accessor);
  assert.ok((self?.data?.ttl ?? 0) > 3500);
  v.close();
  assert.deepEqual(clock.pending(), [], "close() cancels the schedule");
  await assert.rejects(v.tokens.token(), /closed/);
});

test("a 3 s lease is renewed (not replaced by a login) at its last second", async () => {
  const clock = new FakeClock();
  const v = connect(await approle("short-renew", { token_ttl: "3s", token_max_ttl: "1h" }), clock);
  const events = record(v);
  assert.equal((await v.tokens.start()).leaseSeconds, 3);
  assert.deepEqual(clock.pending(), [2000]);
  await advanceUntil(clock, v, 2000, "renew");
  assert.deepEqual(events, ["login", "renew"]);
});

test("a non-renewable (batch) token: a new login at 2/3 of its lease; a 1 s lease every 0.5 s, not in a loop", async () => {
  const clock = new FakeClock();
  const v = connect(await approle("batch", { token_type: "batch", token_ttl: "1h" }), clock);
  const events = record(v);
  const first = await v.tokens.start();
  assert.equal(first.renewable, false);
  const token = await v.tokens.token();
  await advanceUntil(clock, v, RENEW_AT, "login");
  assert.notEqual(await v.tokens.token(), token);
  assert.deepEqual(events, ["login", "login"]);
  assert.equal((await readKv(v.client, "vault:secret/data/app/db"))?.data["user"], "app");

  const short = connect(await approle("batch-1s", { token_type: "batch", token_ttl: "1s" }), clock);
  await short.tokens.start();
  assert.deepEqual(clock.pending().slice(0, 1), [500]);
  for (let i = 2; i <= 4; i++) {
    const [info] = await advanceUntil(clock, short, 500, "login");
    assert.equal(info.logins, i);
  }
  assert.equal(clock.pending()[0], 500, "one login per half second");
});

test("Vault rejects renew-self (token revoked): the same attempt logs in again", async () => {
  const clock = new FakeClock();
  const v = connect(await approle("revoked-renew", { token_ttl: "1h" }), clock);
  const events = record(v);
  const info = await v.tokens.start();
  await root.write("auth/token/revoke-accessor", { accessor: info.accessor });
  const [after] = await advanceUntil(clock, v, RENEW_AT, "login");
  assert.deepEqual(events, ["login", "failure:renew", "login"]);
  assert.notEqual(after.accessor, info.accessor);
  assert.equal(after.renewals, 0);
  assert.deepEqual(clock.pending(), [RENEW_AT], "scheduled from the new token");
  assert.equal((await readKv(v.client, "vault:secret/data/app/db"))?.data["user"], "app");
});

test("a failed login backs off (growing, jittered) and never names the secret_id; fixing it recovers", async () => {
  const clock = new FakeClock();
  const creds = await approle("bad-secret", { token_type: "batch", token_ttl: "1h" });
  const v = connect(creds, clock, { retryMinMs: 1000, retryMaxMs: 30_000 });
  const events = record(v);
  const errors: string[] = [];
  v.tokens.on("failure", (e) => errors.push(e.message));
  await v.tokens.start();
  await writeFile(creds.secretIdFile, "00000000-0000-0000-0000-000000000000\n");
  await advanceUntil(clock, v, RENEW_AT, "failure");
  // Backoff 1 s nominal with equal jitter at 0.5: 750 ms, then 1.5 s. (Two failures only:
  // OpenBao locks the role_id out after five failed logins.)
  assert.deepEqual(clock.pending(), [750]);
  await advanceUntil(clock, v, 750, "failure");
  assert.deepEqual(clock.pending(), [1500]);
  await writeFile(creds.secretIdFile, `${creds.secretId}\n`);
  const [info] = await advanceUntil(clock, v, 1500, "login");
  assert.equal(info.logins, 2);
  assert.deepEqual(events, ["login", "failure:login", "failure:login", "login"]);
  assert.deepEqual(clock.pending(), [RENEW_AT], "the backoff is reset by the success");
  for (const m of errors) assert.doesNotMatch(m, new RegExp(creds.secretId));
});

test("renew-self on a sealed Vault is retried (no login) with backoff, and renews once unsealed", async () => {
  const clock = new FakeClock();
  const v = connect(await approle("sealed", { token_ttl: "1h" }), clock);
  const events = record(v);
  const errors: string[] = [];
  v.tokens.on("failure", (e) => errors.push(e.message));
  const info = await v.tokens.start();
  await bao.seal();
  try {
    await advanceUntil(clock, v, RENEW_AT, "failure");
    assert.match(errors[0] ?? "", /sealed/);
    assert.deepEqual(clock.pending(), [750]);
  } finally {
    await bao.unseal();
    // Unsealed is not yet active (raft elects itself first): wait, so later tests find it serving.
    await waitFor("OpenBao active again after unseal", async () => {
      const h = await root.requestRaw("GET", "sys/health", undefined, {
        noAuth: true,
        acceptStatus: [429, 473, 501, 503],
        maxAttempts: 1,
      });
      return h.status === 200;
    });
  }
  const [renewed] = await advanceUntil(clock, v, 750, "renew");
  assert.equal(renewed.accessor, info.accessor, "the same token, renewed");
  assert.deepEqual(events, ["login", "failure:renew", "renew"]);
});

test("a fixed token: renewed while renewable, left alone when not (root: never expires)", async () => {
  const clock = new FakeClock();
  const fixed = async (body: Record<string, unknown>) => {
    const t = (await root.write("auth/token/create", { policies: ["app-reader"], ...body }))?.auth
      ?.client_token;
    const client = new VaultClient(conn(), { retry: FAST });
    const mgr = new VaultTokenManager(client, new TokenAuth({ token: t }), { clock });
    client.useTokenSource(mgr);
    open.push({ close: () => (mgr.close(), client.close()) });
    return mgr;
  };
  const renewable = await fixed({ ttl: "1h" });
  const lease = (await renewable.start()).leaseSeconds;
  // Vault's lookup-self reports the seconds left (3599 or 3600).
  assert.deepEqual(clock.pending(), [tokenRenewDelayMs(lease, 2 / 3)]);
  const renewed = once(renewable, "renew");
  await clock.advance(tokenRenewDelayMs(lease, 2 / 3));
  await within("renew-self of the fixed token", renewed);
  renewable.close();

  const notRenewable = await fixed({ ttl: "1h", renewable: false });
  assert.equal((await notRenewable.start()).renewable, false);
  assert.deepEqual(clock.pending(), [], "nothing Vault would allow: no timer");
  notRenewable.close();

  const rootMgr = new VaultTokenManager(root, new TokenAuth({ token: bao.rootToken }), { clock });
  assert.equal((await rootMgr.start()).expiresAt, Infinity);
  assert.deepEqual(clock.pending(), []);
  rootMgr.close();
});

test("background off: no timers; a request after the lease ran out logs in first", async () => {
  const clock = new FakeClock();
  const v = connect(await approle("lazy", { token_type: "batch", token_ttl: "1h" }), clock, {
    background: false,
  });
  await v.tokens.start();
  assert.deepEqual(clock.pending(), []);
  await clock.advance(HOUR);
  assert.equal((await readKv(v.client, "vault:secret/data/app/db"))?.data["user"], "app");
  assert.equal(v.tokens.info().logins, 2);
  assert.deepEqual(clock.pending(), [], "still no timers");
});

test("requests share one login; a token Vault rejected is never handed out again", async () => {
  const clock = new FakeClock();
  const v = connect(await approle("shared", { token_ttl: "1h" }), clock);
  const tokens = await Promise.all([v.tokens.token(), v.tokens.token(), v.tokens.token()]);
  assert.equal(new Set(tokens).size, 1);
  assert.equal(v.tokens.info().logins, 1);
  assert.equal(v.tokens.invalidate(tokens[0]!), true);
  const fresh = await v.tokens.token();
  assert.notEqual(fresh, tokens[0]);
  assert.equal(v.tokens.info().logins, 2);
  assert.deepEqual(clock.pending(), [RENEW_AT]);
});

test("a request's login that Vault refuses fails that request only: no background retries to lock the role out", async () => {
  const clock = new FakeClock();
  const creds = await approle("refused-on-demand", { token_ttl: "1h" });
  const v = connect(creds, clock);
  const events = record(v);
  const first = await v.tokens.token();
  await writeFile(creds.secretIdFile, "00000000-0000-0000-0000-000000000000\n");
  v.tokens.invalidate(first);
  await assert.rejects(v.tokens.token(), /secret_id/);
  assert.deepEqual(clock.pending(), [RENEW_AT], "only the renewal already scheduled; no retry added");
  assert.deepEqual(events, ["login"]);
  await writeFile(creds.secretIdFile, `${creds.secretId}\n`);
  await clock.advance(1000);
  assert.notEqual(await v.tokens.token(), first);
  assert.deepEqual(clock.pending(), [RENEW_AT], "the schedule follows the new token");
  assert.deepEqual(events, ["login", "login"]);
});

test("closing the manager during a login to a Vault that hangs aborts the login's request itself, for approle and token", async () => {
  const hang = await startHangingPeer();
  try {
    const auths: VaultConnection["auth"][] = [
      { method: "approle", roleId: "role-id-not-real", secretId: "secret-id-not-real" },
      { method: "token", token: "hvs.test-token-not-real" },
    ];
    for (const auth of auths) {
      const client = new VaultClient({ address: hang.url, skipVerify: false }, { retry: FAST });
      const mgr = new VaultTokenManager(client, authMethodFromConfig(auth));
      const before = hang.accepted();
      const starting = mgr.start();
      starting.catch(() => undefined);
      await waitFor(
        `the ${auth.method} login to reach the hanging Vault`,
        async () => hang.accepted() > before,
      );
      await within(`close() during the ${auth.method} login`, mgr.close());
      await assert.rejects(starting, /stopped/);
      // The request was aborted (its connection closed), not left running until the request timeout.
      // client.close() would end it too, so it comes only after.
      await waitFor(
        `the hanging Vault to see the ${auth.method} login's connection closed`,
        async () => hang.closed() === hang.accepted(),
      );
      client.close();
    }
  } finally {
    hang.close();
  }
});
