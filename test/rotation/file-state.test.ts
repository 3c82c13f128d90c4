// Rotation state in a file (the local and files authorities' data directory): the same
// compare-and-set as the Vault KV v2 and ConfigMap stores. Two operators on one machine that
// advance the same phase: the second is refused with the shared message and the file keeps the
// first one's step; a writer holding the lock is named; a file that is not JSON says what to do.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { once } from "node:events";
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileRotationStore, type Phase, type RotationState } from "../../src/rotation/state.js";
import { stateThrough, twoOperatorsAdvanceTheSamePhase } from "./state-fixture.js";

async function withTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), "meshvault-file-state-"));
  try {
    await fn(dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const state = (id: string, ...phases: Phase[]): RotationState => stateThrough("local", id, ...phases);

test("file: two operators advance the same phase at once: the second is refused and the file keeps the first step", async () =>
  withTempDir(async (dir) => {
    const path = join(dir, "root-rotation.json");
    await twoOperatorsAdvanceTheSamePhase({
      open: () => fileRotationStore(path),
      authority: "local",
      where: `file:${path}`,
      afterFirstWrite: () => assert.equal(statSync(path).mode & 0o777, 0o644),
      afterRefusal: () => assert.ok(!existsSync(`${path}.lock`), "the lock is released after a refusal"),
    });
  }));

test("file: two operators start a rotation at once: the second is refused; a retried identical write is not a conflict", async () =>
  withTempDir(async (dir) => {
    const path = join(dir, "root-rotation.json");
    const [a, b, c] = [fileRotationStore(path), fileRotationStore(path), fileRotationStore(path)];
    for (const s of [a, b, c]) assert.equal(await s.read(), undefined);
    const byA = state("r-a", "prepared");
    await a.write(byA);
    await assert.rejects(
      b.write(state("r-b", "prepared")),
      /it now holds rotation r-a at phase prepared; this step \(to prepared\) was not recorded/,
    );
    await c.write(byA); // finds exactly what it was about to write
    await c.write(state("r-a", "prepared", "trust-both")); // and continues from it
    assert.equal((await fileRotationStore(path).read())?.phase, "trust-both");
  }));

test("file: a write while another live process holds the lock names it; the state is unchanged", async () =>
  withTempDir(async (dir) => {
    const path = join(dir, "root-rotation.json");
    const s = fileRotationStore(path);
    await s.read();
    await s.write(state("r-1", "prepared"));
    const holder = spawn(process.execPath, ["-e", "process.stdin.resume()"], {
      stdio: ["pipe", "ignore", "ignore"],
    });
    try {
      await once(holder, "spawn");
      writeFileSync(`${path}.lock`, `${holder.pid}\n`);
      await s.read();
      await assert.rejects(
        s.write(state("r-1", "prepared", "trust-both")),
        new RegExp(
          `^RotationStateError: rotation state file:${path} is being written by another meshvault root rotate \\(pid ${holder.pid}\\): ` +
            "this step \\(to trust-both\\) was not recorded",
        ),
      );
      assert.equal((await s.read())?.phase, "prepared");
    } finally {
      holder.kill();
      await once(holder, "exit");
    }
    // Its owner gone, the lock is stale and taken over.
    await s.write(state("r-1", "prepared", "trust-both"));
    assert.equal((await s.read())?.phase, "trust-both");
    assert.ok(!existsSync(`${path}.lock`));
  }));

test("file: a state that is not JSON, or not one meshvault wrote, says what to do", async () =>
  withTempDir(async (dir) => {
    const path = join(dir, "root-rotation.json");
    writeFileSync(path, "{ half a file");
    await assert.rejects(
      fileRotationStore(path).read(),
      new RegExp(
        `^RotationStateError: rotation state ${path} is not JSON \\(.+\\): restore it or delete it to start over \\(meshvault root status shows what it holds\\)$`,
      ),
    );
    writeFileSync(path, '{"id": "x"}');
    await assert.rejects(
      fileRotationStore(path).read(),
      /is not one meshvault wrote \(missing id, phase, old, next or history\)/,
    );
    assert.equal(readFileSync(path, "utf8"), '{"id": "x"}', "reading changes nothing");
  }));

test("file: a write before any read is refused as a bug, not done blind", async () =>
  withTempDir(async (dir) => {
    const path = join(dir, "root-rotation.json");
    await assert.rejects(
      fileRotationStore(path).write(state("r-1", "prepared")),
      /written before it was read \(a bug\)/,
    );
    assert.ok(!existsSync(path));
  }));
