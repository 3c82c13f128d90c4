// A service-account-style token from a local CA's token issuer, written to a file for the
// agent's --token-file (the tests' stand-in for a projected Kubernetes token).
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { mintLocalToken } from "../../src/identity/local-issuer.js";

/** Mints default/sleep's token from the CA in `dataDir` into `<dir>/token`; returns the path. */
export async function writeSleepToken(dir: string, dataDir: string): Promise<string> {
  const tokenFile = join(dir, "token");
  writeFileSync(
    tokenFile,
    await mintLocalToken({
      dataDir,
      trustDomain: "cluster.local",
      namespace: "default",
      serviceAccount: "sleep",
    }),
  );
  return tokenFile;
}
