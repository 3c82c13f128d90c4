// A service-account-style token from a local CA's token issuer, written to a file for the
// agent's --token-file (the tests' stand-in for a projected Kubernetes token).
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { mintLocalToken } from "../../src/identity/local-issuer.js";

/** Mints default/sleep's token from the CA in `dataDir` into `<dir>/token`; returns the path. */
export async function writeSleepToken(dir: string, dataDir: string): Promise<string> {
  return writeLocalToken(join(dir, "token"), dataDir, { serviceAccount: "sleep" });
}

/** Mints a default/<serviceAccount> token (audience istio-ca) from the CA in `dataDir` into `file` (0600). */
export async function writeLocalToken(
  file: string,
  dataDir: string,
  o: { serviceAccount: string; ttlSeconds?: number },
): Promise<string> {
  writeFileSync(
    file,
    await mintLocalToken({
      dataDir,
      trustDomain: "cluster.local",
      namespace: "default",
      serviceAccount: o.serviceAccount,
      audiences: ["istio-ca"],
      ...(o.ttlSeconds ? { ttlSeconds: o.ttlSeconds } : {}),
    }),
    { mode: 0o600 },
  );
  return file;
}
