// Exit codes, as the README promises: 0 success, 1 a runtime failure, 2 bad flags or
// configuration. Errors are told apart by class name so that main.ts need not load every
// command's modules to recognise their configuration errors.
import { CommanderError } from "commander";

/** A flag or argument the user must change. */
export class UsageError extends Error {
  override name = "UsageError";
}

/** Errors that mean "the input is wrong": configuration files, flags, durations, names. */
const USAGE_ERRORS = new Set([
  "UsageError",
  "ConfigError",
  "AgentConfigError",
  "VaultConfigError",
  "SetupConfigError",
  "KubeConfigError",
  "DurationError",
  "SpiffeIdError",
  "TunnelFlagError",
  "AddressError",
]);

export function isUsageError(err: unknown): boolean {
  return err instanceof Error && USAGE_ERRORS.has(err.name);
}

/** 0 for --help and --version, 2 for bad flags and configuration, 1 for everything else. */
export function exitCodeFor(err: unknown): number {
  if (err instanceof CommanderError) return err.exitCode === 0 ? 0 : 2;
  return isUsageError(err) ? 2 : 1;
}
