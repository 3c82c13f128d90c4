// freePort() never hands the same port to two callers within a minute, across test processes:
// the window between freePort() and the peer's bind is where parallel test files collided.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { createServer } from "node:net";
import { freePort } from "./helpers/ports.js";

/** What the kernel offers for port 0 right now. */
const freePortOffer = (): Promise<number> =>
  new Promise((res) => {
    const s = createServer().listen(0, "127.0.0.1", () => {
      const a = s.address();
      s.close(() => res(typeof a === "object" && a ? a.port : 0));
    });
  });

test("a port freePort() handed out is skipped by the next caller, also in another process", async () => {
  const first = await freePort();
  // The kernel offers the same port again: the claim makes freePort() take the next offer.
  let asked = 0;
  const second = await freePort(() => (asked++ === 0 ? Promise.resolve(first) : freePortOffer()));
  assert.ok(asked >= 2, "the claimed port was skipped");
  assert.notEqual(second, first);

  const helpers = new URL("./helpers/ports.ts", import.meta.url).href;
  const script = `
    const { freePort } = await import(${JSON.stringify(helpers)});
    const { createServer } = await import("node:net");
    const kernel = () => new Promise((res) => {
      const s = createServer().listen(0, "127.0.0.1", () => { const p = s.address().port; s.close(() => res(p)); });
    });
    const offers = [${first}, ${second}];
    let asked = 0;
    const port = await freePort(() => (asked++, offers.length ? Promise.resolve(offers.shift()) : kernel()));
    console.log(JSON.stringify({ port, asked }));
  `;
  const r = spawnSync(process.execPath, ["--import", "tsx", "--input-type=module", "-e", script], {
    encoding: "utf8",
  });
  assert.equal(r.status, 0, r.stderr);
  // Both offers were claimed by this process: the child skips them and takes the kernel's next port.
  const got = JSON.parse(r.stdout) as { port: number; asked: number };
  assert.ok(got.asked >= 3, `the child was offered ${got.asked} ports`);
  assert.ok(![first, second].includes(got.port), `the child got ${got.port}, a port this process claimed`);
});
