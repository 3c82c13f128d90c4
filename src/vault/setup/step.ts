// One setup step: what it makes true, the equivalent `vault` commands, how to
// read the current state (check) and how to change it (apply). Steps read
// before they write, so a second run changes nothing.

import type { VaultClient } from "../client.js";

export type CheckResult =
  | { state: "ok"; detail?: string | undefined; notes?: string[] | undefined }
  | { state: "missing" | "differs"; detail?: string | undefined };

export interface ApplyResult {
  detail?: string | undefined;
  /** Lines printed under the step (role_id, where a secret_id file went). Never secrets. */
  notes?: string[] | undefined;
}

export interface SetupStep {
  title: string;
  /** The equivalent vault CLI commands, printed by --dry-run. */
  commands: string[];
  check(ctx: StepContext): Promise<CheckResult>;
  apply(ctx: StepContext, current: CheckResult): Promise<ApplyResult | void>;
}

/** A step failed in a way only the user can fix (wrong mount type, a different root...). */
export class SetupStepError extends Error {
  override name = "SetupStepError";
}

interface MountInfo {
  type: string;
  accessor?: string;
  options?: Record<string, string> | null;
}

/** Vault reads shared by steps, cached for one run and dropped after every write. */
export class StepContext {
  private mountsCache: Record<string, MountInfo> | undefined;
  private authCache: Record<string, MountInfo> | undefined;
  constructor(readonly client: VaultClient) {}

  /** `sys/mounts`, keyed by path without the trailing slash. */
  async mounts(): Promise<Record<string, MountInfo>> {
    this.mountsCache ??= await this.table("sys/mounts");
    return this.mountsCache;
  }
  /** `sys/auth`, keyed by path without the trailing slash. */
  async auths(): Promise<Record<string, MountInfo>> {
    this.authCache ??= await this.table("sys/auth");
    return this.authCache;
  }
  invalidate(): void {
    this.mountsCache = undefined;
    this.authCache = undefined;
  }

  private async table(path: string): Promise<Record<string, MountInfo>> {
    const r = await this.client.read<Record<string, MountInfo>>(path);
    const out: Record<string, MountInfo> = {};
    for (const [k, v] of Object.entries(r?.data ?? {})) {
      if (v && typeof v === "object" && typeof v.type === "string") out[k.replace(/\/+$/, "")] = v;
    }
    return out;
  }
}

// ---- helpers for vault CLI equivalents and comparisons --------------------

/** Quote for a POSIX shell when needed. */
export function shq(v: string): string {
  return /^[A-Za-z0-9_@%+=:,./-]+$/.test(v) ? v : `'${v.replace(/'/g, `'\\''`)}'`;
}

/** Seconds as the vault CLI writes them ("87600h", "90s"). */
export function fmtTtl(seconds: number): string {
  if (seconds > 0 && seconds % 3600 === 0) return `${seconds / 3600}h`;
  if (seconds > 0 && seconds % 60 === 0) return `${seconds / 60}m`;
  return `${seconds}s`;
}

/** `key=value` arguments for `vault write`, arrays comma-joined as the CLI accepts them. */
export function kvArgs(fields: Record<string, string | number | boolean | string[]>): string {
  return Object.entries(fields)
    .map(([k, v]) => `${k}=${shq(Array.isArray(v) ? v.join(",") : String(v))}`)
    .join(" ");
}

type Scalar = string | number | boolean | null | undefined;
function norm(v: unknown): Scalar | string {
  if (Array.isArray(v)) return JSON.stringify([...v].map(String).sort());
  if (v === null || v === undefined) return "";
  if (typeof v === "object") return JSON.stringify(v);
  return String(v);
}

/**
 * Fields of `want` that Vault's `have` does not match, as "name: have -> want".
 * Arrays compare as sets; an empty array and a missing field are the same.
 */
export function diffFields(have: Record<string, unknown>, want: Record<string, unknown>): string[] {
  const out: string[] = [];
  for (const [k, w] of Object.entries(want)) {
    const h = have[k];
    const hn = Array.isArray(h) && h.length === 0 ? "" : norm(h);
    const wn = Array.isArray(w) && w.length === 0 ? "" : norm(w);
    if (hn !== wn) out.push(`${k}: ${show(h)} -> ${show(w)}`);
  }
  return out;
}

function show(v: unknown): string {
  if (v === undefined || v === null) return "(unset)";
  if (Array.isArray(v)) return `[${v.join(", ")}]`;
  const s = typeof v === "object" ? JSON.stringify(v) : String(v);
  return s.length > 60 ? `${s.slice(0, 57)}...` : s;
}
