// The commands around the main ones: examples in every --help, shell completion, config validate.
import { after, test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Command } from "commander";
import { buildProgram } from "../../src/cli/main.js";
import { commandPath } from "../../src/cli/examples.js";
import { fishCompletion, zshCompletion } from "../../src/cli/completion.js";
import { cli } from "../helpers/cli.js";

const dir = mkdtempSync(join(tmpdir(), "meshvault-commands-"));
after(() => rmSync(dir, { recursive: true, force: true }));
const env = { ...process.env };

function all(cmd: Command): Command[] {
  return cmd.commands.flatMap((c) => [c, ...all(c)]);
}

test("every command's --help ends with examples that use the command", async () => {
  const program = await buildProgram();
  const missing: string[] = [];
  for (const cmd of [program, ...all(program)]) {
    let text = "";
    cmd.configureOutput({ writeOut: (s) => (text += s), writeErr: (s) => (text += s) });
    cmd.outputHelp();
    const path = commandPath(cmd);
    const examples = text.split("\nExamples:\n")[1];
    if (!examples || !examples.includes(`$ meshvault ${path}`.trimEnd())) missing.push(path || "(program)");
  }
  assert.deepEqual(missing, []);
});

test("completion bash: sourced in a real bash, it completes commands, subcommands and flags", async () => {
  const r = await cli(["completion", "bash"], env);
  assert.equal(r.code, 0, r.err);
  const script = join(dir, "meshvault.bash");
  writeFileSync(script, r.out);
  const complete = (line: string): string[] => {
    const b = spawnSync(
      "bash",
      [
        "-c",
        `source ${script}; COMP_WORDS=(${line}); [[ "${line}" == *" " ]] && COMP_WORDS+=(""); COMP_CWORD=$((\${#COMP_WORDS[@]}-1)); _meshvault; printf '%s\\n' "\${COMPREPLY[@]}"`,
      ],
      { encoding: "utf8" },
    );
    assert.equal(b.status, 0, b.stderr);
    return b.stdout.trim().split("\n");
  };
  for (const c of ["server", "agent", "status", "config", "completion", "vault"])
    assert.ok(complete("meshvault ").includes(c), c);
  assert.deepEqual(complete("meshvault vault se"), ["setup"]);
  assert.deepEqual(complete("meshvault config "), ["validate", "--help", "-h"]);
  assert.deepEqual(complete("meshvault tunnel client --unsafe"), ["--unsafe-listen"]);
  assert.deepEqual(complete("meshvault completion "), ["bash", "zsh", "fish", "--help", "-h"]);
  assert.ok(complete("meshvault agent --ca-").includes("--ca-server-name"));
});

test("completion zsh and fish cover every command and flag", async () => {
  const program = await buildProgram();
  const zsh = zshCompletion(program);
  const fish = fishCompletion(program);
  assert.match(zsh, /^#compdef meshvault\n/);
  assert.match(zsh, /bashcompinit/);
  for (const cmd of all(program)) {
    assert.ok(fish.includes(` -a ${cmd.name()}`), `fish: ${commandPath(cmd)}`);
    for (const o of cmd.options)
      if (o.long) assert.ok(fish.includes(` -l ${o.long.slice(2)}`), `fish: ${commandPath(cmd)} ${o.long}`);
  }
  assert.equal((await cli(["completion", "powershell"], env)).code, 2);
});

test("config validate: server and agent files, exit 0 when valid and 2 with the fields named", async () => {
  const server = join(dir, "server.yaml");
  writeFileSync(server, "trustDomain: example.org\nauthority:\n  type: files\n  dir: /etc/cacerts\n");
  const ok = await cli(["config", "validate", "-c", server], env);
  assert.equal(ok.code, 0, ok.err);
  assert.match(
    ok.out,
    /server\.yaml: valid server configuration \(authority files, trust domain example\.org\)/,
  );

  const agent = join(dir, "agent.yaml");
  writeFileSync(
    agent,
    "identities:\n  - namespace: default\n    serviceAccount: sleep\n    outDir: /tmp/x\n",
  );
  const a = await cli(["config", "validate", "-c", agent], env);
  assert.equal(a.code, 0, a.err);
  assert.match(
    a.out,
    /valid agent configuration \(1 identity, CA localhost:15012, trust domain cluster\.local\)/,
  );

  writeFileSync(server, "authority:\n  type: vault-sign\n  mont: pki_int\n");
  const bad = await cli(["config", "validate", "-c", server], env);
  assert.equal(bad.code, 2);
  assert.match(bad.err, /authority\.mont: unknown field; did you mean "mount"\?/);
  const wrongKind = await cli(["config", "validate", "-c", agent, "--kind", "server"], env);
  assert.equal(wrongKind.code, 2);
  assert.match(wrongKind.err, /identities: unknown field/);
});
