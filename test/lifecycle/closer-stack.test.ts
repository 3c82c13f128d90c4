// The one teardown: last-first, once, every closer runs even when one fails; a failed start
// closes what it had deferred; closeOrThrow() hands a command the first failure.
import { test } from "node:test";
import assert from "node:assert/strict";
import { CloserStack } from "../../src/lifecycle/closer-stack.js";

test("close() runs the closers last-first, once, past a failing one, and reports the failure", async () => {
  const ran: string[] = [];
  const errors: string[] = [];
  const s = new CloserStack((err) => errors.push((err as Error).message));
  s.defer(() => void ran.push("a"));
  s.defer(() => {
    throw new Error("b broke");
  });
  s.defer(async () => void ran.push("c"));
  await Promise.all([s.close(), s.close()]);
  await s.close();
  assert.deepEqual(ran, ["c", "a"]);
  assert.deepEqual(errors, ["b broke"]);
});

test("unlessStartFails closes what the failed start deferred, then rethrows its error", async () => {
  const ran: string[] = [];
  const s = new CloserStack();
  s.defer(() => void ran.push("lock"));
  await assert.rejects(
    s.unlessStartFails(async () => {
      s.defer(() => void ran.push("listener"));
      throw new Error("port taken");
    }),
    /port taken/,
  );
  assert.deepEqual(ran, ["listener", "lock"]);
});

test("closeOrThrow() runs every closer, then rejects with the first failure", async () => {
  const ran: string[] = [];
  const s = new CloserStack();
  s.defer(() => {
    throw new Error("first deferred");
  });
  s.defer(() => void ran.push("middle"));
  s.defer(() => {
    throw new Error("last deferred");
  });
  await assert.rejects(s.closeOrThrow(), /last deferred/);
  assert.deepEqual(ran, ["middle"]);
  await assert.rejects(s.closeOrThrow(), /last deferred/);
});

test("closeOrThrow() resolves when every closer succeeded", async () => {
  const s = new CloserStack();
  s.defer(() => undefined);
  await s.closeOrThrow();
});
