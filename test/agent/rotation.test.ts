import { test } from "node:test";
import assert from "node:assert/strict";
import { backoffDelay, certState, renewalTime } from "../../src/agent/rotation.js";
import { createLimiter } from "../../src/agent/semaphore.js";

const H = 3600_000;
const cert = { notBefore: new Date(0), notAfter: new Date(24 * H) };

test("renewal at notAfter - ratio x lifetime, jitter within +/- graceJitter", () => {
  const policy = { graceRatio: 0.5, graceJitter: 0.01 };
  assert.equal(renewalTime(cert, policy, 0.5).getTime(), 12 * H);
  // random 0 -> ratio 0.49 (later), random ~1 -> ratio 0.51 (earlier)
  assert.equal(renewalTime(cert, policy, 0).getTime(), 24 * H - 0.49 * 24 * H);
  assert.ok(Math.abs(renewalTime(cert, policy, 0.999999).getTime() - (24 * H - 0.51 * 24 * H)) < 1000);
  assert.equal(renewalTime(cert, { graceRatio: 0.2, graceJitter: 0 }).getTime(), 24 * H - 0.2 * 24 * H);
});

test("backoff grows exponentially, is capped, and keeps at least half the nominal delay", () => {
  const p = { initialMs: 1000, maxMs: 60_000 };
  assert.equal(backoffDelay(1, p, 1), 1000);
  assert.equal(backoffDelay(1, p, 0), 500);
  assert.equal(backoffDelay(3, p, 1), 4000);
  assert.equal(backoffDelay(30, p, 1), 60_000);
  assert.equal(backoffDelay(30, p, 0), 30_000);
});

test("certificate state: pending, valid, renewal-overdue, expiring, expired", () => {
  const renewAt = new Date(12 * H);
  assert.equal(certState(undefined, undefined, new Date(0), 0.2), "pending");
  assert.equal(certState(cert, renewAt, new Date(H), 0.2), "valid");
  assert.equal(certState(cert, renewAt, new Date(13 * H), 0.2), "renewal-overdue");
  assert.equal(certState(cert, renewAt, new Date(20 * H), 0.2), "expiring");
  assert.equal(certState(cert, renewAt, new Date(24 * H + 1), 0.2), "expired");
});

test("limiter bounds concurrency", async () => {
  const limit = createLimiter(3);
  let active = 0;
  let peak = 0;
  await Promise.all(
    Array.from({ length: 20 }, () =>
      limit(async () => {
        active++;
        peak = Math.max(peak, active);
        await new Promise((r) => setImmediate(r));
        active--;
      }),
    ),
  );
  assert.equal(peak, 3);
  assert.throws(() => createLimiter(0), /positive integer/);
});
