// One structured logger for every role. Redaction is a backstop: code never logs
// tokens or keys, and these paths are scrubbed anyway should an object slip through.
//
// Two shapes of the same records: JSON lines with level names ("level":"info") for machines,
// and "12:00:00.123 INFO  message key=value" in local time (coloured on a terminal) for
// people. Without an explicit format, a terminal on stderr gets the human shape.
import { pino, type Logger } from "pino";
import { flushBeforeExit } from "./flush.js";

export type { Logger };

/**
 * The logger shape every module takes: pino's `(fields, message)` calls and `child()` for a
 * component's bindings. A pino Logger is one; `silentLog` is the quiet default.
 */
export interface Log {
  debug(obj: object, msg?: string): void;
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
  child(bindings: Record<string, unknown>): Log;
}

export const silentLog: Log = {
  debug() {},
  info() {},
  warn() {},
  error() {},
  child: () => silentLog,
};

export interface LogOptions {
  level?: string;
  /** Default: `pretty` when stderr is a terminal, else `json`. */
  format?: "json" | "pretty";
  name?: string;
}

const REDACT = [
  "token",
  "*.token",
  "authorization",
  "*.authorization",
  "privateKey",
  "*.privateKey",
  "private_key",
  "*.private_key",
  "secret_id",
  "*.secret_id",
  "jwt",
  "*.jwt",
];

// ANSI colours per level; only on a terminal, and never with NO_COLOR set (no-color.org).
const COLOURS: Record<string, string> = {
  trace: "\x1b[90m",
  debug: "\x1b[36m",
  info: "\x1b[32m",
  warn: "\x1b[33m",
  error: "\x1b[31m",
  fatal: "\x1b[35m",
};
const DIM = "\x1b[2m";
const RESET = "\x1b[0m";

function useColour(): boolean {
  if (process.env.NO_COLOR) return false;
  if (process.env.FORCE_COLOR && process.env.FORCE_COLOR !== "0") return true;
  return process.stderr.isTTY === true;
}

/** "12:00:00.123" in local time. */
function localTime(iso: unknown): string {
  const d = new Date(typeof iso === "string" || typeof iso === "number" ? iso : Date.now());
  const p = (n: number, w = 2): string => String(n).padStart(w, "0");
  return `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}.${p(d.getMilliseconds(), 3)}`;
}

/** One JSON record as a human line. */
export function formatPretty(line: string, colour = false): string {
  const rec = JSON.parse(line) as Record<string, unknown>;
  const { time, level, msg, name: _n, pid: _p, hostname: _h, component, ...rest } = rec;
  const label = typeof level === "number" ? (pino.levels.labels[level] ?? String(level)) : String(level);
  const extras = Object.entries(rest)
    .map(([k, v]) => `${k}=${typeof v === "string" && !/\s/.test(v) ? v : JSON.stringify(v)}`)
    .join(" ");
  const lvl = label.toUpperCase().padEnd(5);
  const where = typeof component === "string" ? `[${component}] ` : "";
  const head = colour
    ? `${DIM}${localTime(time)}${RESET} ${COLOURS[label] ?? ""}${lvl}${RESET}`
    : `${localTime(time)} ${lvl}`;
  const tail = extras ? (colour ? ` ${DIM}${extras}${RESET}` : ` ${extras}`) : "";
  return `${head} ${where}${String(msg ?? "")}${tail}\n`;
}

export function createLogger(opts: LogOptions = {}): Logger {
  const format = opts.format ?? (process.stderr.isTTY ? "pretty" : "json");
  const base = {
    level: opts.level ?? "info",
    name: opts.name ?? "meshvault",
    redact: { paths: REDACT, censor: "[redacted]" },
    timestamp: pino.stdTimeFunctions.isoTime,
    formatters: { level: (label: string) => ({ level: label }) },
  };
  if (format === "pretty") {
    const colour = useColour();
    return pino(base, {
      write(line: string) {
        process.stderr.write(formatPretty(line, colour));
      },
    });
  }
  return pino(base, flushBeforeExit(pino.destination({ dest: 2, sync: false })));
}

/** A logger that drops everything, for tests and library use. */
export function silentLogger(): Logger {
  return pino({ level: "silent" });
}
