import assert from "node:assert/strict";
import { test } from "node:test";
import { Backoff, backoffDelay } from "../../src/timing/backoff.js";
import { abortable, isAbortError, sleep } from "../../src/timing/clock.js";
import { FakeClock } from "../helpers/fake-clock.js";

test("backoffDelay: exponential up to maxMs, jitter is the random fraction", () => {
  const none = { initialMs: 100, maxMs: 1000, jitter: 0 };
  assert.deepEqual(
    [1, 2, 3, 4, 5, 50, 5000].map((a) => backoffDelay(a, none, 0.3)),
    [100, 200, 400, 800, 1000, 1000, 1000],
  );
  // Equal jitter (the default): [nominal/2, nominal].
  const equal = { initialMs: 1000, maxMs: 60_000 };
  assert.equal(backoffDelay(1, equal, 0), 500);
  assert.equal(backoffDelay(1, equal, 1), 1000);
  assert.equal(backoffDelay(30, equal, 0), 30_000);
  // Full jitter: [0, nominal].
  const full = { initialMs: 100, maxMs: 5000, jitter: 1 };
  assert.equal(backoffDelay(3, full, 0), 0);
  assert.equal(backoffDelay(3, full, 0.5), 200);
  assert.equal(backoffDelay(3, { ...none, multiplier: 1.5 }, 0), 225);
});

test("Backoff counts attempts and starts over after reset", () => {
  const b = new Backoff({ initialMs: 10, maxMs: 1000, jitter: 0 });
  assert.deepEqual([b.next(), b.next(), b.next()], [10, 20, 40]);
  assert.equal(b.attempts, 3);
  b.reset();
  assert.equal(b.attempts, 0);
  assert.equal(b.next(), 10);
});

test("sleep waits on the clock and is cut short by its signal", async () => {
  const clock = new FakeClock();
  let done = false;
  const p = sleep(5000, undefined, clock).then(() => (done = true));
  await clock.advance(4999);
  assert.equal(done, false);
  await clock.advance(1);
  await p;
  assert.equal(done, true);

  const ac = new AbortController();
  const cut = sleep(60_000, ac.signal, clock);
  ac.abort();
  await assert.rejects(cut, (e) => isAbortError(e));
  assert.deepEqual(clock.pending(), [], "the aborted sleep's timer is cancelled");
  await assert.rejects(sleep(1, ac.signal, clock), (e) => isAbortError(e));
});

test("abortable: a promise that cannot take a signal is abandoned when the signal aborts", async () => {
  const ac = new AbortController();
  const never = new Promise<string>(() => {});
  const p = abortable(never, ac.signal);
  ac.abort();
  await assert.rejects(p, (e) => isAbortError(e));
  assert.equal(await abortable(Promise.resolve("v"), new AbortController().signal), "v");
});

test("abortable: with a signal already aborted, the abandoned promise's own rejection is not an unhandled rejection", async () => {
  const unhandled: unknown[] = [];
  const onUnhandled = (e: unknown): void => void unhandled.push(e);
  process.on("unhandledRejection", onUnhandled);
  try {
    const ac = new AbortController();
    ac.abort();
    let fail!: (e: Error) => void;
    const later = new Promise<never>((_, reject) => (fail = reject));
    await assert.rejects(abortable(later, ac.signal), (e: unknown) => isAbortError(e));
    fail(new Error("VaultTokenManager is closed"));
    // An unhandled rejection is reported within the next macrotasks; then the anchor: it did reject.
    await new Promise((r) => setImmediate(r));
    await new Promise((r) => setImmediate(r));
    await assert.rejects(later, /VaultTokenManager is closed/);
    assert.deepEqual(unhandled, []);
  } finally {
    process.off("unhandledRejection", onUnhandled);
  }
});
