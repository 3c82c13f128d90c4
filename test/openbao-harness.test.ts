// The OpenBao harness under parallel test files: the port freePort() returns can be taken by
// another file's peer before bao binds it. The harness must then start on new ports, never
// hand back an address where another server answers (which failed every test of a file at once).
import { test } from "node:test";
import assert from "node:assert/strict";
import { startOpenBao } from "./helpers/openbao.js";

for (const persistent of [false, true]) {
  test(`${persistent ? "persistent" : "dev"}: a port another OpenBao holds is given up for a new one`, async () => {
    const first = await startOpenBao({ persistent });
    try {
      const port = Number(new URL(first.addr).port);
      const second = await startOpenBao({ persistent, firstPort: port });
      try {
        assert.notEqual(second.addr, first.addr);
        for (const bao of [first, second]) {
          const r = await fetch(`${bao.addr}/v1/auth/token/lookup-self`, {
            headers: { "x-vault-token": bao.rootToken },
          });
          assert.equal(r.status, 200, `${bao.addr} knows its own root token`);
        }
      } finally {
        await second.stop();
      }
    } finally {
      await first.stop();
    }
  });
}
