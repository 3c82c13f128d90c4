// The `meshvault` command: thin wiring of the modules below it.
import { readFileSync } from "node:fs";
import { setFlagsFromString } from "node:v8";
import type { Command } from "commander";

type Registrar = (program: Command) => unknown;

// Each command's declaration (flags, help, examples) is imported only when that command runs,
// and every declaration imports its implementation only in its action: `--help`, `--version`
// and `completion` load no server, Vault, Kubernetes or gRPC modules (test/cli/startup.test.ts),
// and a sidecar running `meshvault agent` loads the agent's and nothing else.
const COMMANDS: Record<string, () => Promise<Registrar>> = {
  server: async () => (await import("./commands/server.js")).registerServerCommand,
  cacerts: async () => (await import("./commands/cacerts.js")).registerCaCertsCommand,
  cert: async () => (await import("./commands/cert.js")).registerCertCommands,
  token: async () => (await import("./commands/token.js")).registerTokenCommands,
  vault: async () => (await import("./commands/vault.js")).registerVaultCommands,
  agent: async () => (await import("./commands/agent.js")).registerAgentCommand,
  tunnel: async () => (await import("./commands/tunnel.js")).registerTunnelCommand,
  demo: async () => (await import("./commands/demo.js")).registerDemoCommand,
  verify: async () => (await import("./commands/verify.js")).registerVerifyCommand,
  config: async () => (await import("./commands/config.js")).registerConfigCommands,
  completion: async () => (await import("./commands/completion.js")).registerCompletionCommand,
  status: async () => (await import("./commands/status.js")).registerStatusCommand,
  root: async () => (await import("./commands/root.js")).registerRootCommands,
};

export function version(): string {
  const pkg = JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as {
    version: string;
  };
  return pkg.version;
}

/** The CLI; with `only`, just that command is loaded (help and unknown commands load all). */
export async function buildProgram(only?: string): Promise<Command> {
  const [{ Command }, { addExamples }] = await Promise.all([import("commander"), import("./examples.js")]);
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
  // `meshvault --version` alone prints what commander would print, without loading commander
  // and every command's declaration (a third of its start-up CPU).
  if (argv.length === 3 && (argv[2] === "--version" || argv[2] === "-v")) {
    process.stdout.write(`${version()}\n`);
    return;
  }
  const program = await buildProgram(argv[2]);
  try {
    await program.parseAsync(argv);
  } catch (err) {
    const [{ CommanderError }, { exitCodeFor }] = await Promise.all([
      import("commander"),
      import("./errors.js"),
    ]);
    // commander has printed its own message (and help) for flag errors.
    if (!(err instanceof CommanderError)) {
      // The error is the last line: the (asynchronous) log written before it goes out first.
      await (await import("../log/flush.js")).flushLogs();
      process.stderr.write(`meshvault: ${(err as Error).message}\n`);
    }
    process.exit(exitCodeFor(err));
  }
}
