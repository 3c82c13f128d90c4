import { test } from "node:test";
import assert from "node:assert/strict";
import { closeWithGrace } from "../../src/timing/grace.js";
import { FakeClock } from "../helpers/fake-clock.js";

/** A close with a 1 s grace on a fake clock; `done()` is the graceful close finishing. */
function closing(): { clock: FakeClock; forced: () => number; done: () => void; result: Promise<unknown> } {
  const clock = new FakeClock();
  let forced = 0;
  let done!: () => void;
  const result = closeWithGrace({ graceful: (d) => (done = d), force: () => forced++, graceMs: 1000, clock });
  return { clock, forced: () => forced, done, result };
}

test("a graceful close that finishes within the grace period is not forced", async () => {
  const c = closing();
  await c.clock.advance(999);
  c.done();
  assert.deepEqual(await c.result, { forced: false });
  assert.deepEqual(c.clock.pending(), [], "the grace timer is cancelled");
  assert.equal(c.forced(), 0);
});

test("a graceful close still open when the grace period ends is forced, once", async () => {
  const c = closing();
  await c.clock.advance(1000);
  assert.deepEqual(await c.result, { forced: true });
  assert.equal(c.forced(), 1);
  c.done(); // the graceful close finishing after the force changes nothing
  assert.equal(c.forced(), 1);
});
