// File output for workloads without Envoy: cert-chain.pem, key.pem (0600) and
// root-cert.pem, each replaced atomically (temp file in the same directory, fsync,
// rename) so a reader never sees half a file or a key that does not match the chain.
import { spawn } from "node:child_process";
import { promises as fs } from "node:fs";
import path from "node:path";
import { writeFileAtomic } from "../fs/atomic-write.js";
import type { WorkloadSecrets } from "./sds/source.js";
import { fsReason } from "../fs/errors.js";
import { makeDir } from "../fs/make-dir.js";

export const CERT_CHAIN_FILE = "cert-chain.pem";
export const KEY_FILE = "key.pem";
export const ROOT_CERT_FILE = "root-cert.pem";

/**
 * Writes the three files. The key is written first and the chain last, so that a reader that
 * watches cert-chain.pem (as most do) finds the matching key already in place.
 */
export async function writeCredentialFiles(dir: string, secrets: WorkloadSecrets): Promise<void> {
  try {
    await makeDir(dir, 0o700);
    await writeFileAtomic(path.join(dir, KEY_FILE), secrets.privateKeyPem, 0o600);
    await writeFileAtomic(path.join(dir, ROOT_CERT_FILE), secrets.rootsPem, 0o644);
    await writeFileAtomic(path.join(dir, CERT_CHAIN_FILE), secrets.certChainPem, 0o644);
  } catch (err) {
    throw new Error(
      `cannot write certificates to ${dir}: ${fsReason(err)}; check that the directory is writable by this user`,
      { cause: err },
    );
  }
}

/** Reads what writeCredentialFiles wrote, or undefined when any file is missing. */
export async function readCredentialFiles(dir: string): Promise<WorkloadSecrets | undefined> {
  try {
    const [certChainPem, privateKeyPem, rootsPem] = await Promise.all([
      fs.readFile(path.join(dir, CERT_CHAIN_FILE), "utf8"),
      fs.readFile(path.join(dir, KEY_FILE), "utf8"),
      fs.readFile(path.join(dir, ROOT_CERT_FILE), "utf8"),
    ]);
    return { certChainPem, privateKeyPem, rootsPem };
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw err;
  }
}

export interface ExecResult {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/**
 * Runs the post-rotation command through the shell (like ghostunnel/consul-template hooks),
 * with MESHVAULT_CERT_DIR and MESHVAULT_SPIFFE_ID in its environment. Output goes to our
 * stderr. Resolves when it exits; never rejects for a non-zero exit (the caller logs it).
 */
export function runHook(
  command: string,
  env: Record<string, string>,
  timeoutMs = 60_000,
): Promise<ExecResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, {
      shell: true,
      stdio: ["ignore", "inherit", "inherit"],
      env: { ...process.env, ...env },
    });
    const timer = setTimeout(() => child.kill("SIGTERM"), timeoutMs);
    child.on("error", (err) => {
      clearTimeout(timer);
      reject(new Error(`cannot run the post-rotation command ${JSON.stringify(command)}: ${err.message}`));
    });
    child.on("exit", (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal });
    });
  });
}
