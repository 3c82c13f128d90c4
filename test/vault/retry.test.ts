// Our retry loop, driven by a local HTTP server that answers like a struggling
// Vault (5xx, 429, 412) before succeeding. Vault's own behaviour is tested
// against real OpenBao in the other files; this only counts our attempts.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { createServer, type Server } from "node:http";
import { createServer as createNetServer } from "node:net";
import { isAbortError } from "../../src/timing/clock.js";
import { waitFor } from "../helpers/wait.js";
import { VaultBadRequestError, VaultClient, VaultUnavailableError } from "../../src/vault/index.js";

let srv: Server;
let addr: string;
let script: Array<{ status: number; body: unknown; headers?: Record<string, string> }> = [];
let hits = 0;
let lastToken: string | undefined;

before(async () => {
  srv = createServer((req, res) => {
    hits++;
    lastToken = req.headers["x-vault-token"] as string | undefined;
    const next = script.shift() ?? { status: 200, body: { data: { ok: true } } };
    res.writeHead(next.status, { "Content-Type": "application/json", ...next.headers });
    res.end(JSON.stringify(next.body));
  });
  await new Promise<void>((r) => srv.listen(0, "127.0.0.1", () => r()));
  addr = `http://127.0.0.1:${(srv.address() as { port: number }).port}`;
});
after(() => {
  srv.close();
});

function client(maxAttempts = 4): VaultClient {
  return new VaultClient(
    { address: addr, skipVerify: false },
    { token: "tok-123456", retry: { maxAttempts, baseDelayMs: 5, maxDelayMs: 20 } },
  );
}

test("500, 502, 503, 429 and 412 are retried until success", async () => {
  for (const status of [500, 502, 503, 429, 412]) {
    hits = 0;
    script = [
      { status, body: { errors: ["busy"] } },
      { status, body: { errors: ["busy"] } },
    ];
    const c = client();
    const r = await c.read<{ ok: boolean }>("secret/data/x");
    assert.equal(r?.data?.ok, true, `status ${status}`);
    assert.equal(hits, 3, `status ${status}: two failures then success`);
    assert.equal(lastToken, "tok-123456");
    c.close();
  }
});

test("retries stop at maxAttempts with a retryable error that says so", async () => {
  hits = 0;
  script = Array.from({ length: 5 }, () => ({ status: 502, body: { errors: ["bad gateway"] } }));
  const c = client(3);
  await assert.rejects(c.read("pki/sign/x"), (e: unknown) => {
    assert.ok(e instanceof VaultUnavailableError, String(e));
    assert.equal(e.retryable, true);
    assert.match(e.message, /could not serve GET pki\/sign\/x: bad gateway .*gave up after 3 attempts/);
    return true;
  });
  assert.equal(hits, 3);
  script = [];
  c.close();
});

test("400 is not retried and carries Vault's errors verbatim", async () => {
  hits = 0;
  script = [{ status: 400, body: { errors: ["common name not allowed by this role"] } }];
  const c = client();
  await assert.rejects(c.write("pki/sign/workload", { csr: "x" }), (e: unknown) => {
    assert.ok(e instanceof VaultBadRequestError);
    assert.deepEqual(e.vaultErrors, ["common name not allowed by this role"]);
    assert.match(e.message, /POST pki\/sign\/workload: common name not allowed by this role/);
    return true;
  });
  assert.equal(hits, 1);
  c.close();
});

test("secrets sent in the body are scrubbed from echoed error text", async () => {
  const secret = "super-secret-id-value-42";
  script = [{ status: 400, body: { errors: [`invalid secret_id ${secret} for tok-123456`] } }];
  const c = client();
  await assert.rejects(
    c.write("auth/approle/login", { role_id: "r", secret_id: secret }, { noAuth: true }),
    (e: unknown) => {
      assert.ok(e instanceof VaultBadRequestError);
      assert.ok(!e.message.includes(secret) && !e.message.includes("tok-123456"), e.message);
      assert.match(e.message, /\[redacted\]/);
      return true;
    },
  );
  c.close();
});

test("backoff is full jitter, exponential and capped", () => {
  const hi = new VaultClient(
    { address: addr, skipVerify: false },
    { retry: { baseDelayMs: 100, maxDelayMs: 1000 }, random: () => 0.999999 },
  );
  const lo = new VaultClient(
    { address: addr, skipVerify: false },
    { retry: { baseDelayMs: 100, maxDelayMs: 1000 }, random: () => 0 },
  );
  assert.deepEqual(
    [1, 2, 3, 4, 5, 6].map((a) => hi.backoffMs(a)),
    [100, 200, 400, 800, 1000, 1000],
  );
  assert.deepEqual(
    [1, 2, 3].map((a) => lo.backoffMs(a)),
    [0, 0, 0],
  );
  hi.close();
  lo.close();
});

test("a request to a Vault that accepts and never answers is cancelled by its signal", async () => {
  // A real TCP peer that hangs: accepts connections, reads, never writes.
  const sockets: import("node:net").Socket[] = [];
  const hang = createNetServer((s) => sockets.push(s));
  await new Promise<void>((r) => hang.listen(0, "127.0.0.1", () => r()));
  const port = (hang.address() as { port: number }).port;
  const c = new VaultClient(
    { address: `http://127.0.0.1:${port}`, skipVerify: false },
    { token: "tok-123456", timeoutMs: 600_000 },
  );
  try {
    const ac = new AbortController();
    const pending = c.read("pki/ca/pem", { signal: ac.signal });
    await waitFor("the hanging peer to accept the request", async () => sockets.length > 0);
    ac.abort();
    await assert.rejects(pending, (e: unknown) => {
      assert.ok(isAbortError(e), String(e));
      return true;
    });
  } finally {
    c.close();
    for (const s of sockets) s.destroy();
    hang.close();
  }
});

test("an abort during the retry wait ends the request without another attempt", async () => {
  hits = 0;
  script = Array.from({ length: 5 }, () => ({ status: 503, body: { errors: ["sealed"] } }));
  const c = new VaultClient(
    { address: addr, skipVerify: false },
    {
      token: "tok-123456",
      retry: { maxAttempts: 5, baseDelayMs: 600_000, maxDelayMs: 600_000 },
      random: () => 1,
    },
  );
  const ac = new AbortController();
  const pending = c.read("secret/data/x", { signal: ac.signal });
  await waitFor("the first attempt", async () => hits === 1);
  ac.abort();
  await assert.rejects(pending, (e: unknown) => isAbortError(e));
  assert.equal(hits, 1);
  c.close();
  script = [];
});
