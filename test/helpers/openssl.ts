// Drives the real `openssl` CLI as an independent implementation to check ours against.
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

export function openssl(args: string[], input?: string | Uint8Array): string {
  return execFileSync("openssl", args, { input, encoding: "utf8", stdio: ["pipe", "pipe", "pipe"] });
}

/** Runs `fn` with a temp dir that is removed afterwards. */
export function withTempDir<T>(fn: (dir: string) => T): T {
  const dir = mkdtempSync(join(tmpdir(), "meshvault-test-"));
  try {
    return fn(dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** A key and CSR made by openssl. `keyArgs` e.g. ["-newkey", "rsa:2048"] or ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]. */
export function opensslCsr(
  keyArgs: string[],
  subj = "/O=",
  extra: string[] = [],
): { csrPem: string; keyPem: string } {
  return withTempDir((dir) => {
    const key = join(dir, "key.pem");
    const csr = join(dir, "csr.pem");
    openssl(["req", "-new", ...keyArgs, "-nodes", "-keyout", key, "-out", csr, "-subj", subj, ...extra]);
    return { csrPem: openssl(["req", "-in", csr]), keyPem: openssl(["pkey", "-in", key]) };
  });
}

/** `-newkey` arguments for openssl req: an EC P-256 key. */
export const EC_P256_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"];
/** `-newkey` arguments for openssl req: an RSA 2048 key. */
export const RSA_2048_KEY = ["-newkey", "rsa:2048"];

/**
 * A self-signed certificate and its unencrypted key made by `openssl req -x509`, written to
 * `cert` and `key`. `extra` e.g. ["-sha256"] or ["-addext", "subjectAltName=IP:127.0.0.1"].
 */
export function opensslSelfSigned(o: {
  keyArgs: string[];
  days: number;
  subj: string;
  cert: string;
  key: string;
  extra?: string[];
}): void {
  openssl([
    "req",
    "-new",
    ...o.keyArgs,
    "-x509",
    "-days",
    String(o.days),
    "-nodes",
    "-out",
    o.cert,
    "-keyout",
    o.key,
    "-subj",
    o.subj,
    ...(o.extra ?? []),
  ]);
}

/** `openssl verify` with a purpose; returns [ok, output]. */
export function opensslVerify(
  rootsPem: string,
  intermediatesPem: string,
  leafPem: string,
  purpose: string,
): [boolean, string] {
  return withTempDir((dir) => {
    writeFileSync(join(dir, "roots.pem"), rootsPem);
    writeFileSync(join(dir, "untrusted.pem"), intermediatesPem || rootsPem);
    writeFileSync(join(dir, "leaf.pem"), leafPem);
    try {
      const out = execFileSync(
        "openssl",
        [
          "verify",
          "-purpose",
          purpose,
          "-CAfile",
          join(dir, "roots.pem"),
          "-untrusted",
          join(dir, "untrusted.pem"),
          join(dir, "leaf.pem"),
        ],
        { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] },
      );
      return [true, out];
    } catch (err) {
      const e = err as { stdout?: string; stderr?: string };
      return [false, `${e.stdout ?? ""}${e.stderr ?? ""}`];
    }
  });
}
