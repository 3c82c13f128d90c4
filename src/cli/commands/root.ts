// `meshvault root status|rotate`: the declaration (flags, help); the rotation operator and
// its Vault and Kubernetes clients load only when one runs (../root.ts).
import type { Command } from "commander";
import { collect } from "./repeatable.js";

export interface RootFlags {
  config?: string;
  server: string[];
  check: string[];
  output: string;
}

export interface RotateFlags extends RootFlags {
  dryRun?: boolean;
  until?: string;
  wait: string;
  interval: string;
  rootTtl?: string;
  commonName?: string;
  crossSign?: boolean;
  importRoot?: string;
  new?: boolean;
}

export function registerRootCommands(program: Command): void {
  const root = program
    .command("root")
    .description("the root of trust's life: staged rotation and its status");
  const common = (c: Command): Command =>
    c
      .option(
        "-c, --config <file>",
        "the servers' YAML configuration (authority, vault, rotation, rootCertFile)",
      )
      .option(
        "--server <url>",
        "a replica's HTTP side port (/rotation, /roots); repeatable (default the config's listen.http); none: no meshvault servers (stock istiod with meshvault cacerts)",
        collect,
        [],
      )
      .option(
        "--check <source>",
        "another channel to check, in verify's source syntax (sds:SOCKET, file:DIR, kube:CONTEXT); repeatable",
        collect,
        [],
      )
      .option("-o, --output <format>", "text or json", "text");
  common(
    root
      .command("status")
      .description("phase, both roots, what each channel holds, and what blocks the next step"),
  ).action(async (f: RootFlags) => (await import("../root.js")).runRootStatus(f));
  common(
    root
      .command("rotate")
      .description(
        "take the next step of a staged root rotation (prepare, trust-both, switch, retire) once nothing blocks it",
      ),
  )
    .option("--dry-run", "print the steps left and what each waits for; change nothing")
    .option(
      "--until <phase>",
      "keep going, waiting for each step's conditions, up to this phase: prepared, trust-both, switched, retired",
    )
    .option("--wait <duration>", "with --until: give up after this long", "30m")
    .option("--interval <duration>", "with --until: how often to re-check the channels", "2s")
    .option(
      "--root-ttl <duration>",
      "prepare: the new root's lifetime (default the authority's rootTtl, or 87600h)",
    )
    .option("--common-name <cn>", "prepare: the new root's common name")
    .option(
      "--import-root <file>",
      "prepare: import this root (PEM certificate + its private key, made outside Vault) as the new root instead of generating one",
    )
    .option(
      "--cross-sign",
      "prepare: also certify the new root with the old one; in switched servers send it after the new intermediate, so peers holding only the old root verify new leaves",
    )
    .option(
      "--new",
      "start another rotation after the last one retired (without it, a retired rotation is left finished)",
    )
    .action(async (f: RotateFlags) => (await import("../root.js")).runRootRotate(f));
}
