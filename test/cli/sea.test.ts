// The single executable (npm run build:sea): built once per change of its inputs and cached in
// ~/.cache/meshvault/sea-<hash>/ (src, proto, the build script, package.json, the lockfile and
// the Node binary), then run as users run it: from an empty directory, no node_modules near it.
import { before, test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { mkdir, mkdtemp, rename, rm } from "node:fs/promises";
import { homedir, tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { REPO } from "../helpers/cli.js";

const run = promisify(execFile);

function inputsHash(): string {
  const h = createHash("sha256")
    .update(process.version)
    .update(readFileSync(process.execPath).subarray(0, 1 << 20));
  const files = ["package.json", "package-lock.json", "scripts/build-sea.js"];
  for (const dir of ["src", "proto"])
    for (const f of readdirSync(join(REPO, dir), { recursive: true }).map(String).sort())
      if (/\.(ts|proto)$/.test(f)) files.push(join(dir, f));
  for (const f of files) h.update(f).update(readFileSync(join(REPO, f)));
  return h.digest("hex").slice(0, 16);
}

let exe: string;
let cwd: string;

before(async () => {
  const cache = join(homedir(), ".cache", "meshvault");
  const dir = join(cache, `sea-${inputsHash()}`);
  exe = join(dir, "meshvault");
  if (!existsSync(exe)) {
    await mkdir(cache, { recursive: true });
    const building = await mkdtemp(join(cache, "sea-building-"));
    await run(process.execPath, [join(REPO, "scripts", "build-sea.js"), "--out", building], {
      cwd: REPO,
      maxBuffer: 16 << 20,
    });
    await rename(building, dir).catch(async () => {
      // Another run cached the same inputs first.
      await rm(building, { recursive: true, force: true });
    });
  }
  cwd = await mkdtemp(join(tmpdir(), "meshvault-sea-run-"));
});

test("the single executable prints package.json's version, with no Node warning", async () => {
  const { version } = JSON.parse(readFileSync(join(REPO, "package.json"), "utf8")) as { version: string };
  const r = await run(exe, ["--version"], { cwd });
  assert.equal(r.stdout.trim(), version);
  assert.equal(r.stderr, "");
});

test("the single executable runs the demo: three outcomes hold (server, agents, tunnels, protos inside)", async () => {
  const r = await run(exe, ["demo", "--authority", "local"], { cwd, timeout: 120_000 });
  assert.match(r.stdout, /HTTP 200/);
  assert.match(r.stdout, /all three outcomes hold/);
  await rm(cwd, { recursive: true, force: true });
});
