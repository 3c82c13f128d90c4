// The README documents every command, flag and configuration field a user can touch:
// this test walks the real CLI and the real config schemas, so the docs cannot drift.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import type { Command } from "commander";
import { buildProgram } from "../../src/cli/main.js";
import { serverConfigSchema } from "../../src/config/schema.js";
import { agentConfigSchema } from "../../src/agent/config.js";
import { ENV_FIELDS } from "../../src/config/load.js";

const readme = readFileSync(join(import.meta.dirname, "..", "..", "README.md"), "utf8");

function commands(cmd: Command, prefix: string[] = []): { path: string; cmd: Command }[] {
  return cmd.commands.flatMap((c) => {
    const path = [...prefix, c.name()];
    return [{ path: path.join(" "), cmd: c }, ...commands(c, path)];
  });
}

test("every command and every flag is in the README", async () => {
  const missing: string[] = [];
  for (const { path, cmd } of commands(await buildProgram())) {
    if (!readme.includes(`meshvault ${path}`)) missing.push(`command: meshvault ${path}`);
    for (const opt of cmd.options) {
      const flag = opt.long ?? opt.short;
      if (flag && flag !== "--help" && !readme.includes(flag)) missing.push(`meshvault ${path} ${flag}`);
    }
  }
  assert.deepEqual(missing, []);
});

/** Object keys of a zod schema, recursively (unwrapping defaults, optionals, unions, arrays). */
function keysOf(schema: unknown, out = new Set<string>()): Set<string> {
  const def = (schema as { def?: Record<string, unknown> } | undefined)?.def;
  if (!def) return out;
  const shape = (def.shape ?? undefined) as Record<string, unknown> | undefined;
  if (shape)
    for (const [k, v] of Object.entries(shape)) {
      out.add(k);
      keysOf(v, out);
    }
  for (const inner of [def.innerType, def.in, def.out, def.element, def.schema])
    if (inner) keysOf(inner, out);
  for (const o of (def.options as unknown[] | undefined) ?? []) keysOf(o, out);
  return out;
}

test("every server and agent configuration field is in the README", () => {
  const missing = [...keysOf(serverConfigSchema), ...keysOf(agentConfigSchema)].filter(
    (k) => !new RegExp(`\\b${k}\\b`).test(readme),
  );
  assert.deepEqual(missing, []);
  assert.ok(keysOf(serverConfigSchema).size > 40, "the schema walk found the fields");
});

test("every MESHVAULT_* environment variable is in the README", () => {
  assert.deepEqual(
    Object.keys(ENV_FIELDS).filter((e) => !readme.includes(e)),
    [],
  );
});

test("the README opens with the run command and the test command", () => {
  const firstBlock = readme.split("```")[1] ?? "";
  assert.match(firstBlock, /npm ci && npm start/);
  assert.match(firstBlock, /npm test/);
});
