// A Log for tests that pass their own logger: it keeps every (fields, message) call, with the
// bindings of `child()` merged into the fields as pino does, so assertions can read both.
import type { Log } from "../../src/log/logger.js";

export type Level = "debug" | "info" | "warn" | "error";

export interface LogRecord {
  level: Level;
  obj: Record<string, unknown>;
  msg: string;
}

export interface RecordingLog extends Log {
  /** Every record, from this logger and its children, in order. */
  readonly records: LogRecord[];
  /** The messages logged at `level`. */
  at(level: Level): string[];
  child(bindings: Record<string, unknown>): RecordingLog;
}

/** `echo`: also print each record to stderr (for debugging a test, e.g. `echo: !!process.env.DEBUG`). */
export function recordingLog(options: { echo?: boolean } = {}): RecordingLog {
  return make({}, [], options.echo ?? false);
}

function make(bindings: Record<string, unknown>, records: LogRecord[], echo: boolean): RecordingLog {
  const at =
    (level: Level) =>
    (obj: object, msg?: string): void => {
      const rec = { level, obj: { ...bindings, ...obj }, msg: msg ?? "" };
      records.push(rec);
      if (echo) console.error(level, rec.msg, JSON.stringify(rec.obj));
    };
  return {
    records,
    at: (level) => records.filter((r) => r.level === level).map((r) => r.msg),
    debug: at("debug"),
    info: at("info"),
    warn: at("warn"),
    error: at("error"),
    child: (more) => make({ ...bindings, ...more }, records, echo),
  };
}
