// The `meshvault` command: thin wiring of the modules below it.
import { readFileSync } from "node:fs";
import { setFlagsFromString } from "node:v8";
import { Command, CommanderError } from "commander";
import { exitCodeFor } from "./errors.js";
import { addExamples } from "./examples.js";

type Registrar = (program: Command) => unknown;

// Each command's module is imported only when that command runs: a sidecar running
// `meshvault agent` must not load the server, Vault and Kubernetes clients (about 85 MB of RSS).
const COMMANDS: Record<string, () => Promise<Registrar>> = {
  server: async () => (await import("./server.js")).registerServerCommand,
  cacerts: async () => (await import("./cacerts.js")).registerCaCertsCommand,
  cert: async () => (await import("./inspect.js")).registerCertCommands,
  token: async () => (await import("./token.js")).registerTokenCommands,
  vault: async () => (await import("./vault.js")).registerVaultCommands,
  agent: async () => (await import("./agent.js")).registerAgentCommand,
  tunnel: async () => (await import("./tunnel.js")).registerTunnelCommand,
  demo: async () => (await import("./demo.js")).registerDemoCommand,
  verify: async () => (await import("./verify.js")).registerVerifyCommand,
  config: async () => (await import("./config-validate.js")).registerConfigCommands,
  completion: async () => (await import("./completion.js")).registerCompletionCommand,
  status: async () => (await import("./status.js")).registerStatusCommand,
  root: async () => (await import("./root.js")).registerRootCommands,
};

export function version(): string {
  const pkg = JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as {
    version: string;
  };
  return pkg.version;
}

/** The CLI; with `only`, just that command is loaded (help and unknown commands load all). */
export async function buildProgram(only?: string): Promise<Command> {
  const program = new Command("meshvault")
    .description("Vault (or OpenBao) as the root of trust for a service mesh's mTLS identities")
    .version(version(), "-v, --version", "print the version")
    .showHelpAfterError()
    .exitOverride();
  const names = only && only in COMMANDS ? [only] : Object.keys(COMMANDS);
  for (const name of names) (await COMMANDS[name]!())(program);
  addExamples(program);
  return program;
}

export async function main(argv: string[]): Promise<void> {
  // A sidecar agent idles between renewals: V8's optimizing compiler would only add its own
  // code pages to every pod's memory (3.4 MB RSS in bench/agents.ts). Off before the agent's
  // modules load; later it is too late (start-up code has already been optimized).
  if (argv[2] === "agent") setFlagsFromString("--no-opt");
  // `meshvault ... | head` closes the pipe early: that is not an error worth a stack trace.
  process.stdout.on("error", (err: NodeJS.ErrnoException) => {
    if (err.code === "EPIPE") process.exit(0);
    throw err;
  });
  const program = await buildProgram(argv[2]);
  try {
    await program.parseAsync(argv);
  } catch (err) {
    // commander has printed its own message (and help) for flag errors.
    if (!(err instanceof CommanderError)) process.stderr.write(`meshvault: ${(err as Error).message}\n`);
    process.exit(exitCodeFor(err));
  }
}
