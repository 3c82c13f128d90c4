import { test } from "node:test";
import assert from "node:assert/strict";
import { closeWithGrace } from "../../src/timing/grace.js";
import { FakeClock } from "../helpers/fake-clock.js";

test("a graceful close that finishes within the grace period is not forced", async () => {
  const clock = new FakeClock();
  let forced = 0;
  let done!: () => void;
  const closing = closeWithGrace({
    graceful: (d) => (done = d),
    force: () => forced++,
    graceMs: 1000,
    clock,
  });
  await clock.advance(999);
  done();
  assert.deepEqual(await closing, { forced: false });
  assert.deepEqual(clock.pending(), [], "the grace timer is cancelled");
  assert.equal(forced, 0);
});

test("a graceful close still open when the grace period ends is forced, once", async () => {
  const clock = new FakeClock();
  let forced = 0;
  let done!: () => void;
  const closing = closeWithGrace({
    graceful: (d) => (done = d),
    force: () => forced++,
    graceMs: 1000,
    clock,
  });
  await clock.advance(1000);
  assert.deepEqual(await closing, { forced: true });
  assert.equal(forced, 1);
  done(); // the graceful close finishing after the force changes nothing
  assert.equal(forced, 1);
});
