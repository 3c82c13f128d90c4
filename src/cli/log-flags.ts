// --log-level and --log-format, checked like every other flag (exit 2 with the choices).
import type { LogOptions } from "../log/logger.js";
import { UsageError } from "./errors.js";

const LEVELS = ["trace", "debug", "info", "warn", "error", "fatal", "silent"];

export function logOptionsFromFlags(f: { logLevel?: string; logFormat?: string }, name: string): LogOptions {
  if (f.logLevel !== undefined && !LEVELS.includes(f.logLevel))
    throw new UsageError(`--log-level ${JSON.stringify(f.logLevel)}: use one of ${LEVELS.join(", ")}`);
  if (f.logFormat !== undefined && f.logFormat !== "json" && f.logFormat !== "pretty")
    throw new UsageError(
      `--log-format ${JSON.stringify(f.logFormat)}: use json or pretty (default: pretty on a terminal, else json)`,
    );
  return {
    level: f.logLevel ?? "info",
    name,
    ...(f.logFormat ? { format: f.logFormat } : {}),
  };
}
