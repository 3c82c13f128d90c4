// The independent SDS client (test/sds-peers/client: go-control-plane's envoy/service/secret/v3
// client over grpc-go), built once by scripts/ensure-sds-client.sh, and the JSON report it
// prints for one scenario.
import { execFile } from "node:child_process";
import { join } from "node:path";
import { promisify } from "node:util";
import { REPO } from "../helpers/cli.js";

const execFileP = promisify(execFile);

export const GO_SCENARIOS = [
  "separate",
  "one-stream",
  "ack",
  "nack",
  "unknown",
  "bad-type",
  "reconnect",
  "leave",
  "fetch",
  "delta",
  "rotation",
] as const;
export type GoScenario = (typeof GO_SCENARIOS)[number] | "fresh";

export interface GoResource {
  name: string;
  anyType: string;
  kind: "tls_certificate" | "validation_context" | "other" | string;
  /** Envoy's proto validation (protoc-gen-validate) error, "" when valid. */
  valid: string;
  leafSerial?: string;
  leafURIs?: string[];
  chainLen?: number;
  keyMatches?: boolean;
  roots?: number;
  digest: string;
}

export interface GoResponse {
  version: string;
  nonce: string;
  typeUrl: string;
  resources: GoResource[];
  /** default's chain verifies against ROOTCA's roots (both in this response). */
  verified?: boolean;
}

export interface GoReport {
  scenario: string;
  error?: string;
  responses?: Record<string, GoResponse>;
  between?: GoResponse[];
  statuses?: Record<string, { code: string; message: string }>;
  verified?: boolean;
  facts?: Record<string, unknown>;
  fresh?: GoResponse;
  freshError?: string;
}

let built: Promise<string> | undefined;

/** Path of the Go SDS client, building it on first use (MESHVAULT_SDS_CLIENT overrides). */
export function sdsClientBinary(): Promise<string> {
  built ??= (async () => {
    if (process.env.MESHVAULT_SDS_CLIENT) return process.env.MESHVAULT_SDS_CLIENT;
    try {
      const { stdout } = await execFileP(
        "bash",
        [join(REPO, "scripts", "ensure-sds-client.sh"), "--print-path"],
        {
          cwd: REPO,
          maxBuffer: 16 * 1024 * 1024,
        },
      );
      return stdout.trim();
    } catch (err) {
      const e = err as { stderr?: string; message: string };
      throw new Error(
        `cannot build the Go SDS test client (scripts/ensure-sds-client.sh): ${e.stderr?.trim() || e.message}`,
        { cause: err },
      );
    }
  })();
  return built;
}

export interface RunOptions {
  /** NACK error_detail message, or the unknown resource name. */
  detail?: string;
  /** How long to wait for a rotation push (Go duration). */
  wait?: string;
  node?: string;
}

export async function runGoScenario(
  socket: string,
  scenario: GoScenario,
  o: RunOptions = {},
): Promise<GoReport> {
  const bin = await sdsClientBinary();
  const args = ["-socket", socket, "-scenario", scenario];
  if (o.detail) args.push("-detail", o.detail);
  if (o.wait) args.push("-wait", o.wait);
  if (o.node) args.push("-node", o.node);
  // Asynchronous on purpose: the CA fixture runs in this process and must keep answering.
  const { stdout } = await execFileP(bin, args, { timeout: 120_000, maxBuffer: 16 * 1024 * 1024 });
  return JSON.parse(stdout) as GoReport;
}

/** The resources of `r` by name. */
export function byName(r: GoResponse | undefined): Map<string, GoResource> {
  return new Map((r?.resources ?? []).map((x) => [x.name, x]));
}
