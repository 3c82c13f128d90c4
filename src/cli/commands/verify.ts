// `meshvault verify`: the declaration (flags, help); the readers load only when it runs.
import type { Command } from "commander";

export interface VerifyFlags {
  output: string;
  timeout: string;
}

export function registerVerifyCommand(program: Command): void {
  program
    .command("verify")
    .description(
      "check that CA servers, clusters, files and agents trust each other: roots, a trust matrix, what to fix",
    )
    .argument(
      "<sources...>",
      "[name=]ca:http://host:port[,grpc=host:port,token=FILE] | file:PATH | kube:CONTEXT[,ns=NS,cacerts=NS/NAME,kubeconfig=FILE] | sds:SOCKET",
    )
    .option("-o, --output <format>", "text or json", "text")
    .option("--timeout <duration>", "per-source timeout for network reads", "10s")
    .action(async (sources: string[], f: VerifyFlags) =>
      (await import("../verify.js")).runVerifyCommand(sources, f),
    );
}
