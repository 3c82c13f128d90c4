// One server per data directory, ports before files, and a bounded clear failure on an
// unusable data directory: driven through the `meshvault server` CLI process.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import type { ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { cli, spawnCli } from "../helpers/cli.js";
import { Leftovers } from "../helpers/leftovers.js";
import { freePort } from "../helpers/ports.js";
import { waitFor } from "../helpers/wait.js";

const leftovers = new Leftovers("MESHVAULT_KEEP_TEST_DIRS");
let dir: string;
const env = (): NodeJS.ProcessEnv => {
  const e: NodeJS.ProcessEnv = { ...process.env };
  for (const k of Object.keys(e)) if (/^(MESHVAULT|VAULT|BAO)_/.test(k)) delete e[k];
  return e;
};

before(() => {
  dir = mkdtempSync(join(tmpdir(), "meshvault-data-dir-"));
  leftovers.dir(dir);
});
after(() => rmSync(dir, { recursive: true, force: true }));

function serverArgs(dataDir: string, grpc: number, http: number): string[] {
  return [
    "server",
    "--data-dir",
    dataDir,
    "--grpc-listen",
    `127.0.0.1:${grpc}`,
    "--http-listen",
    `127.0.0.1:${http}`,
  ];
}

test("an unusable data directory fails at once with exit code 2, naming the field and the path", async () => {
  writeFileSync(join(dir, "a-file"), "x");
  for (const bad of ["/proc/x", join(dir, "a-file", "data")]) {
    const r = await cli(serverArgs(bad, await freePort(), await freePort()), env());
    assert.equal(r.code, 2, r.err);
    assert.match(r.err, /dataDir \(--data-dir, MESHVAULT_DATA_DIR\)/);
    assert.ok(r.err.includes(bad), r.err);
    assert.match(r.err, /cannot create the directory|not a directory/);
  }
});

test("a second server on the same data directory exits 2 naming the first one's pid and touches nothing", async () => {
  const data = join(dir, "shared");
  const [grpc, http] = [await freePort(), await freePort()];
  const first: ChildProcess = spawnCli(serverArgs(data, grpc, http), { env: env(), stdio: "ignore" });
  leftovers.child(first);
  try {
    await waitFor(
      "the first server ready",
      () =>
        fetch(`http://127.0.0.1:${http}/readyz`).then(
          (r) => r.status === 200,
          () => false,
        ),
      60_000, // a CLI process's first start, on a loaded machine
    );
    const bundle = join(data, "root-cert.pem");
    const before = { text: readFileSync(bundle, "utf8"), mtime: statSync(bundle).mtimeMs };
    const second = await cli(serverArgs(data, await freePort(), await freePort()), env());
    assert.equal(second.code, 2, second.err);
    assert.match(second.err, new RegExp(`${data} is in use by a meshvault server with pid ${first.pid}`));
    assert.deepEqual({ text: readFileSync(bundle, "utf8"), mtime: statSync(bundle).mtimeMs }, before);
    assert.equal(
      (await fetch(`http://127.0.0.1:${http}/readyz`)).status,
      200,
      "the first server is unharmed",
    );

    // Ports in use: refused before anything is written to the other data directory.
    const other = join(dir, "other");
    const busy = await cli(serverArgs(other, grpc, await freePort()), env());
    assert.equal(busy.code, 1, busy.err);
    assert.match(
      busy.err,
      new RegExp(
        `cannot listen on 127.0.0.1:${grpc} for the CA gRPC API: .*EADDRINUSE.*: another process \\(or another meshvault\\) holds port ${grpc} there; stop it or choose another port`,
      ),
    );
    assert.deepEqual(readdirSync(other), [], "nothing written, and the lock released");
  } finally {
    first.kill("SIGTERM");
    await new Promise((r) => first.once("exit", r));
  }
  assert.equal(existsSync(join(data, "server.lock")), false, "released on shutdown");
});
