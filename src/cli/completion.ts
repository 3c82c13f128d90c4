// `meshvault completion bash|zsh|fish`: shell completion scripts generated from the command
// tree itself, so every command and flag is offered (and a new one without any extra work).
import type { Command, Option } from "commander";
import { UsageError } from "./errors.js";

interface Node {
  path: string[];
  summary: string;
  flags: { names: string[]; takesValue: boolean; choices?: string[]; summary: string }[];
  children: string[];
}

function nodes(program: Command): Node[] {
  const out: Node[] = [];
  const walk = (cmd: Command, path: string[]): void => {
    const options = [...cmd.options];
    out.push({
      path,
      summary: cmd.description(),
      flags: [
        ...options.map((o: Option) => ({
          names: [o.long, o.short].filter((n): n is string => Boolean(n)),
          takesValue: o.required || o.optional,
          ...(o.argChoices ? { choices: o.argChoices } : {}),
          summary: o.description,
        })),
        { names: ["--help", "-h"], takesValue: false, summary: "show help" },
      ],
      children: [
        ...cmd.commands.map((c) => c.name()),
        ...cmd.registeredArguments.flatMap((a) => a.argChoices ?? []),
      ],
    });
    for (const c of cmd.commands) walk(c, [...path, c.name()]);
  };
  walk(program, []);
  return out;
}

const firstSentence = (s: string): string => s.split(/[.;(]/)[0]!.trim().replace(/'/g, "");

/** Bash: a function that finds the command path among the words typed so far. */
export function bashCompletion(program: Command): string {
  const cases = nodes(program)
    .map((n) => {
      const words = [...n.children, ...n.flags.flatMap((f) => f.names)].join(" ");
      const valued = n.flags.filter((f) => f.takesValue).flatMap((f) => f.names);
      return `    "${n.path.join(" ")}") words="${words}"; valued="${valued.join(" ")}" ;;`;
    })
    .join("\n");
  return `# meshvault bash completion: source <(meshvault completion bash)
_meshvault() {
  local cur prev path="" w i words valued
  cur="\${COMP_WORDS[COMP_CWORD]}"
  prev="\${COMP_WORDS[COMP_CWORD-1]}"
  # The command path: the leading words that are subcommands.
  for ((i = 1; i < COMP_CWORD; i++)); do
    w="\${COMP_WORDS[i]}"
    [[ "$w" == -* ]] && break
    case "\${path:+$path }$w" in
${nodes(program)
  .filter((n) => n.path.length > 0)
  .map((n) => `      "${n.path.join(" ")}") path="${n.path.join(" ")}" ;;`)
  .join("\n")}
      *) break ;;
    esac
  done
  case "$path" in
${cases}
  esac
  # After a flag that takes a value, complete file names.
  if [[ " $valued " == *" $prev "* ]]; then
    COMPREPLY=( $(compgen -f -- "$cur") )
    return 0
  fi
  COMPREPLY=( $(compgen -W "$words" -- "$cur") )
  [[ \${#COMPREPLY[@]} -eq 0 ]] && COMPREPLY=( $(compgen -f -- "$cur") )
  return 0
}
complete -o filenames -F _meshvault meshvault
`;
}

/** Zsh: the bash function through zsh's bashcompinit (no separate grammar to keep in step). */
export function zshCompletion(program: Command): string {
  return `#compdef meshvault
# meshvault zsh completion: meshvault completion zsh > "\${fpath[1]}/_meshvault"
autoload -U +X bashcompinit && bashcompinit
${bashCompletion(program).replace(/^# meshvault bash completion.*\n/, "")}`;
}

/** Fish: one `complete` line per command and flag, conditioned on the command path. */
export function fishCompletion(program: Command): string {
  const lines = [
    "# meshvault fish completion: meshvault completion fish > ~/.config/fish/completions/meshvault.fish",
  ];
  lines.push("complete -c meshvault -f");
  const all = nodes(program);
  const cond = (path: string[]): string => {
    if (path.length === 0) return "__fish_use_subcommand";
    const here = path.map((p) => `__fish_seen_subcommand_from ${p}`).join("; and ");
    const below = (all.find((n) => n.path.join(" ") === path.join(" "))?.children ?? []).filter((c) =>
      all.some((n) => n.path.join(" ") === [...path, c].join(" ")),
    );
    return below.length ? `${here}; and not __fish_seen_subcommand_from ${below.join(" ")}` : here;
  };
  for (const n of all) {
    for (const c of n.children) {
      const child = all.find((x) => x.path.join(" ") === [...n.path, c].join(" "));
      const d = child ? ` -d '${firstSentence(child.summary)}'` : "";
      lines.push(`complete -c meshvault -n '${cond(n.path)}' -a ${c}${d}`);
    }
    for (const f of n.flags) {
      const long = f.names.find((x) => x.startsWith("--"))?.slice(2);
      const short = f.names.find((x) => /^-[^-]$/.test(x))?.slice(1);
      lines.push(
        `complete -c meshvault -n '${cond(n.path)}'${long ? ` -l ${long}` : ""}${short ? ` -s ${short}` : ""}${f.takesValue ? " -r -F" : ""} -d '${firstSentence(f.summary)}'`,
      );
    }
  }
  return `${lines.join("\n")}\n`;
}

/** `meshvault completion <shell>` (declared in commands/completion.ts): the whole command tree. */
export async function runCompletion(shell: string): Promise<void> {
  // Every command's declaration, whichever command this process loaded.
  const { buildProgram } = await import("./main.js");
  const full = await buildProgram();
  const make = { bash: bashCompletion, zsh: zshCompletion, fish: fishCompletion }[shell];
  if (!make) throw new UsageError(`completion ${JSON.stringify(shell)}: use bash, zsh or fish`);
  process.stdout.write(make(full));
}
