// `meshvault completion`: the declaration (arguments, help); the script generators load only
// when it runs (../completion.ts).
import { Argument, type Command } from "commander";

export function registerCompletionCommand(program: Command): void {
  program
    .command("completion")
    .description("print a shell completion script: bash, zsh or fish")
    .addArgument(new Argument("<shell>", "bash, zsh or fish").choices(["bash", "zsh", "fish"]))
    .action(async (shell: string) => (await import("../completion.js")).runCompletion(shell));
}
