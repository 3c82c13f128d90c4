// `meshvault agent ... --sds-socket S` as a child process against a CA fixture, in the
// sidecar shape (flags) or the node-agent shape (--config with several identities), with
// its JSON log lines collected, for the SDS tests that must exercise the real wiring.
import type { ChildProcess } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { spawnCli } from "../helpers/cli.js";
import { waitFor } from "../helpers/wait.js";
import type { CaFixture } from "./ca-fixture.js";

export const LOG_LEVELS = ["trace", "debug", "info", "warn", "error"] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

/** pino's numeric levels. */
export const LEVEL_NUMBER: Record<LogLevel, number> = { trace: 10, debug: 20, info: 30, warn: 40, error: 50 };

export interface LogRecord {
  level: number;
  msg: string;
  [k: string]: unknown;
}

export interface AgentProcess {
  /** SDS socket per identity name (`<namespace>/<serviceAccount>`). */
  sockets: Map<string, string>;
  child: ChildProcess;
  /** Parsed JSON log lines so far. */
  logs: LogRecord[];
  /** Output lines that were not JSON (a crash's stack trace ends up here). */
  otherOutput: string[];
  exitCode(): number | null | undefined;
  waitForLog(what: string, pred: (r: LogRecord) => boolean, ms?: number): Promise<LogRecord>;
  stop(): Promise<number | null>;
}

export interface AgentProcessOptions {
  ca: CaFixture;
  /** Working directory for sockets and the config file. */
  dir: string;
  level: LogLevel;
  shape: "sidecar" | "node-agent";
  /** Service accounts in namespace `default`; the sidecar shape uses the first. */
  serviceAccounts: string[];
  /** Extra flags (e.g. --cert-ttl). */
  args?: string[];
}

export async function startAgentProcess(o: AgentProcessOptions): Promise<AgentProcess> {
  const sockets = new Map<string, string>();
  const identities: { namespace: string; serviceAccount: string; tokenFile: string; sdsSocket: string }[] =
    [];
  for (const sa of o.serviceAccounts) {
    const sdsSocket = join(o.dir, "sds", sa, "socket");
    identities.push({
      namespace: "default",
      serviceAccount: sa,
      tokenFile: await o.ca.token("default", sa),
      sdsSocket,
    });
    sockets.set(`default/${sa}`, sdsSocket);
  }
  const common = [
    "--ca-address",
    o.ca.address,
    "--ca-server-name",
    "localhost",
    "--ca-root-cert",
    o.ca.rootCertFile,
    "--key-algorithm",
    "ec-p256",
    "--log-level",
    o.level,
    ...(o.args ?? []),
  ];
  let args: string[];
  if (o.shape === "sidecar") {
    const id = identities[0]!;
    args = [
      "agent",
      "--namespace",
      id.namespace,
      "--service-account",
      id.serviceAccount,
      "--token-file",
      id.tokenFile,
      "--sds-socket",
      id.sdsSocket,
      ...common,
    ];
    for (const k of [...sockets.keys()].slice(1)) sockets.delete(k);
  } else {
    mkdirSync(o.dir, { recursive: true });
    const file = join(o.dir, "agent.yaml");
    writeFileSync(file, JSON.stringify({ identities }, null, 2)); // JSON is YAML
    args = ["agent", "--config", file, ...common];
  }

  const child = spawnCli(args, { stdio: ["ignore", "pipe", "pipe"] });
  const logs: LogRecord[] = [];
  const otherOutput: string[] = [];
  let exit: number | null | undefined;
  const exited = new Promise<number | null>((resolve) =>
    child.once("exit", (code) => {
      exit = code;
      resolve(code);
    }),
  );
  const collect = (stream: NodeJS.ReadableStream): void => {
    let buf = "";
    stream.setEncoding("utf8");
    stream.on("data", (chunk: string) => {
      buf += chunk;
      let i: number;
      while ((i = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        try {
          const rec = JSON.parse(line) as LogRecord;
          // JSON logs carry level names ("level":"warn"); compare them as pino's numbers.
          const level = (rec.level as unknown as string | number) ?? "";
          if (typeof level === "string" && level in LEVEL_NUMBER)
            logs.push({ ...rec, level: LEVEL_NUMBER[level as LogLevel] });
          else if (typeof level === "number") logs.push(rec);
          else otherOutput.push(line);
        } catch {
          if (line.trim()) otherOutput.push(line);
        }
      }
    });
  };
  collect(child.stdout!);
  collect(child.stderr!);

  const p: AgentProcess = {
    sockets,
    child,
    logs,
    otherOutput,
    exitCode: () => exit,
    waitForLog: (what, pred, ms = 15_000) =>
      waitFor(
        what,
        () => {
          if (exit !== undefined)
            throw new Error(`agent exited (${exit}) while waiting for ${what}:\n${otherOutput.join("\n")}`);
          return Promise.resolve(logs.find(pred));
        },
        ms,
      ),
    async stop() {
      if (exit === undefined) child.kill("SIGTERM");
      return exited;
    },
  };
  return p;
}
