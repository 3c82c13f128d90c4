// One structured logger for every role. Redaction is a backstop: code never logs
// tokens or keys, and these paths are scrubbed anyway should an object slip through.
import { pino, type Logger } from "pino";

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

export function createLogger(opts: LogOptions = {}): Logger {
  const base = {
    level: opts.level ?? "info",
    name: opts.name ?? "meshvault",
    redact: { paths: REDACT, censor: "[redacted]" },
    timestamp: pino.stdTimeFunctions.isoTime,
  };
  if (opts.format === "pretty") {
    // A small human format without extra dependencies: "12:00:00 INFO msg key=value".
    return pino(base, {
      write(line: string) {
        const rec = JSON.parse(line) as Record<string, unknown>;
        const { time, level, msg, name: _n, pid: _p, hostname: _h, ...rest } = rec;
        const lvl = pino.levels.labels[level as number]?.toUpperCase() ?? String(level);
        const extras = Object.entries(rest)
          .map(([k, v]) => `${k}=${typeof v === "string" ? v : JSON.stringify(v)}`)
          .join(" ");
        process.stderr.write(
          `${String(time).slice(11, 19)} ${lvl.padEnd(5)} ${String(msg)}${extras ? " " + extras : ""}\n`,
        );
      },
    });
  }
  return pino(base, pino.destination({ dest: 2, sync: false }));
}

/** A logger that drops everything, for tests and library use. */
export function silentLogger(): Logger {
  return pino({ level: "silent" });
}
