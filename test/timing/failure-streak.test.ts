import { test } from "node:test";
import assert from "node:assert/strict";
import { FailureStreak } from "../../src/timing/failure-streak.js";

test("a failure streak grows the backoff, flags repeated messages and ends on success", () => {
  const s = new FailureStreak({ initialMs: 100, maxMs: 1000, jitter: 0 });
  assert.deepEqual(s.fail("refused"), { attempt: 1, delayMs: 100, repeated: false });
  assert.deepEqual(s.fail("refused"), { attempt: 2, delayMs: 200, repeated: true });
  assert.deepEqual(s.fail("timed out"), { attempt: 3, delayMs: 400, repeated: false });
  assert.equal(s.lastError, "timed out");
  assert.equal(s.succeed(), 3);
  assert.equal(s.attempts, 0);
  assert.equal(s.lastError, undefined);
  // After a success the same message is news again.
  assert.deepEqual(s.fail("timed out"), { attempt: 1, delayMs: 100, repeated: false });
});
