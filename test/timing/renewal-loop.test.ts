import assert from "node:assert/strict";
import { test } from "node:test";
import { createLogger, type Log } from "../../src/log/logger.js";
import { RenewalLoop, type RenewalLoopOptions } from "../../src/timing/renewal-loop.js";
import { isAbortError } from "../../src/timing/clock.js";
import { FakeClock } from "../helpers/fake-clock.js";
import { recordingLog } from "../helpers/recording-log.js";

interface Lease {
  n: number;
  from: number;
  until: number;
}

/** A renewer whose answers the test scripts: a lifetime in ms, or an error. */
function scripted(clock: FakeClock, answers: (number | Error)[]) {
  let n = 0;
  const calls = { count: 0 };
  const renew = async (): Promise<Lease> => {
    calls.count++;
    const a = answers.shift() ?? 100_000;
    if (a instanceof Error) throw a;
    return { n: ++n, from: clock.now(), until: clock.now() + a };
  };
  return { renew, calls };
}

function loop(
  clock: FakeClock,
  o: Partial<RenewalLoopOptions<Lease>> & Pick<RenewalLoopOptions<Lease>, "renew">,
) {
  return new RenewalLoop<Lease>({
    what: "test lease",
    validity: (l) => ({ from: l.from, until: l.until }),
    clock,
    random: () => 1,
    backoff: { initialMs: 1000, maxMs: 60_000, jitter: 0 },
    ...o,
  });
}

test("a pino logger is a Log", () => {
  const l: Log = createLogger({ level: "silent" }).child({ component: "x" });
  l.info({ a: 1 }, "typed");
});

test("renews when the renewAt fraction of the lifetime has passed", async () => {
  const clock = new FakeClock();
  const s = scripted(clock, [100_000, 100_000]);
  const l = loop(clock, { renew: s.renew, renewAt: 0.75 });
  l.start();
  assert.equal((await l.ready()).n, 1);
  assert.deepEqual(clock.pending(), [75_000]);
  await clock.advance(74_999);
  assert.equal(s.calls.count, 1);
  await clock.advance(1);
  assert.equal(s.calls.count, 2);
  assert.equal(l.current?.n, 2);
  assert.equal(l.status().renewals, 2);
  assert.equal(l.status().renewAt, clock.now() + 75_000);
  await l.stop();
});

test("start(initial) schedules from the given value without renewing now", async () => {
  const clock = new FakeClock();
  const s = scripted(clock, []);
  const l = loop(clock, { renew: s.renew });
  l.start({ n: 0, from: clock.now() - 10_000, until: clock.now() + 30_000 });
  assert.equal(s.calls.count, 0);
  assert.deepEqual(clock.pending(), [10_000]);
  assert.equal((await l.ready()).n, 0);
  await l.stop();
});

test("a value that never needs renewing (renewAt Infinity) leaves no timer; a failure still retries", async () => {
  const clock = new FakeClock();
  const s = scripted(clock, [new Error("down")]);
  const l = new RenewalLoop<Lease>({
    what: "test lease",
    renew: s.renew,
    validity: (v) => ({ until: v.until, renewAt: Infinity }),
    clock,
    backoff: { initialMs: 1000, maxMs: 60_000, jitter: 0 },
  });
  l.start({ n: 0, from: clock.now(), until: Infinity });
  assert.deepEqual(clock.pending(), []);
  assert.equal(l.status().nextAttemptAt, undefined);
  await assert.rejects(l.renewNow(), /down/);
  assert.deepEqual(clock.pending(), [1000], "retried with backoff");
  await clock.next();
  assert.equal(l.current?.n, 1);
  assert.deepEqual(clock.pending(), [], "then idle again");
  await l.stop();
});

test("start() again with a value obtained on demand: it becomes current, the schedule and backoff start over", async () => {
  const clock = new FakeClock();
  const s = scripted(clock, [new Error("down"), new Error("down")]);
  const l = loop(clock, { renew: s.renew });
  l.start({ n: 0, from: clock.now(), until: clock.now() + 2000 });
  await clock.next(); // renewal at 1 s fails: retry in 500 ms (clamped to half the 1 s left)
  assert.equal(l.status().failures, 1);
  l.start({ n: 7, from: clock.now(), until: clock.now() + 100_000 });
  assert.equal(l.current?.n, 7);
  assert.deepEqual(clock.pending(), [50_000]);
  assert.equal(l.status().failures, 0);
  assert.equal(l.status().lastError, undefined);
  await l.stop();
});

test("failures back off; the retry is clamped so a valid value gets more tries before it expires", async () => {
  const clock = new FakeClock();
  const boom = new Error("vault sealed");
  const s = scripted(clock, [20_000, boom, boom, boom, 20_000]);
  const failures: number[] = [];
  const l = loop(clock, {
    renew: s.renew,
    backoff: { initialMs: 1000, maxMs: 60_000, jitter: 0, multiplier: 4 },
    onFailure: (_e, f) => failures.push(f.retryInMs),
  });
  l.start();
  await l.ready();
  await clock.next(); // renewal at 10 s fails: 10 s left -> backoff 1 s
  await clock.next(); // fails: backoff 4 s, 9 s left -> 4 s
  await clock.next(); // fails: backoff 16 s, 5 s left -> 2.5 s
  assert.deepEqual(failures, [1000, 4000, 2500]);
  assert.equal(l.status().failures, 3);
  assert.equal(l.status().lastError, "vault sealed");
  await clock.next();
  assert.equal(l.current?.n, 2);
  assert.equal(l.status().failures, 0, "a success resets the backoff");
  await l.stop();
});

test("without a valid value the plain backoff applies (no clamp)", async () => {
  const clock = new FakeClock();
  const s = scripted(clock, [new Error("down"), new Error("down"), new Error("down")]);
  const l = loop(clock, { renew: s.renew });
  l.start();
  await clock.advance(0);
  assert.deepEqual(clock.pending(), [1000]);
  await clock.next();
  assert.deepEqual(clock.pending(), [2000]);
  await clock.next();
  assert.deepEqual(clock.pending(), [4000]);
  await l.stop();
});

test("a repeated error is logged once; a new error and the recovery are logged", async () => {
  const clock = new FakeClock();
  const log = recordingLog();
  const s = scripted(clock, [new Error("a"), new Error("a"), new Error("a"), new Error("b"), 50_000]);
  const l = loop(clock, { renew: s.renew, log });
  l.start();
  for (let i = 0; i < 4; i++) await clock.next();
  await l.ready();
  const levels = log.records.map((r) => r.level);
  assert.deepEqual(levels, ["error", "debug", "debug", "error", "info"]);
  assert.match(log.records[4]!.msg, /after 4 failed attempts/);
  assert.equal(log.records[4]!.obj["failures"], 4);
  await l.stop();
});

test("a failure while the value is valid is a warning that says the current one is kept", async () => {
  const clock = new FakeClock();
  const log = recordingLog();
  const s = scripted(clock, [10_000, new Error("x")]);
  const l = loop(clock, { renew: s.renew, log });
  l.start();
  await clock.next();
  assert.deepEqual(
    log.records.map((r) => [r.level, r.msg]),
    [["warn", "test lease: renewal failed; keeping the current one, which is still valid; retrying"]],
  );
  assert.equal(log.records[0]!.obj["err"], "x");
  await l.stop();
});

test("stop() aborts the attempt in flight, cancels the timer and rejects ready()", async () => {
  const clock = new FakeClock();
  let seen: AbortSignal | undefined;
  const l = loop(clock, {
    renew: (signal) =>
      new Promise<Lease>((_resolve, reject) => {
        seen = signal;
        signal.addEventListener("abort", () => reject(signal.reason as Error));
      }),
  });
  l.start();
  const ready = l.ready();
  await clock.advance(0);
  assert.equal(seen?.aborted, false);
  await l.stop();
  assert.equal(seen?.aborted, true);
  await assert.rejects(ready, /stopped before the first success/);
  assert.deepEqual(clock.pending(), []);
  await assert.rejects(l.renewNow(), (e) => isAbortError(e));
});

test("renewNow shares an attempt in flight and replaces the scheduled one", async () => {
  const clock = new FakeClock();
  const s = scripted(clock, []);
  const l = loop(clock, { renew: s.renew });
  l.start({ n: 0, from: clock.now(), until: clock.now() + 100_000 });
  const [a, b] = await Promise.all([l.renewNow(), l.renewNow()]);
  assert.equal(a, b);
  assert.equal(s.calls.count, 1);
  assert.deepEqual(clock.pending(), [50_000]);
  await l.stop();
});

test("maxIntervalMs runs the loop again before the value is due; minIntervalMs stops a spin", async () => {
  const clock = new FakeClock();
  const s = scripted(clock, [100_000, 10]);
  const l = loop(clock, { renew: s.renew, maxIntervalMs: 30_000, minIntervalMs: 2000 });
  l.start();
  await l.ready();
  assert.deepEqual(clock.pending(), [30_000]);
  await clock.next();
  assert.deepEqual(clock.pending(), [2000], "a 10 ms lifetime is not renewed at once");
  await l.stop();
});

test("onRenewed sees the new and the previous value", async () => {
  const clock = new FakeClock();
  const s = scripted(clock, []);
  const seen: [number, number | undefined][] = [];
  const l = loop(clock, { renew: s.renew, onRenewed: (v, p) => seen.push([v.n, p?.n]) });
  l.start();
  await l.ready();
  await clock.next();
  assert.deepEqual(seen, [
    [1, undefined],
    [2, 1],
  ]);
  await l.stop();
});
