// `meshvault token create` runs (declared in commands/token.ts): mint a service-account-style
// token from the local issuer, for workloads on machines without Kubernetes.
import { mkdirSync, writeFileSync } from "node:fs";
import { dirname } from "node:path";
import { parseDuration } from "../config/duration.js";
import { mintLocalToken } from "../identity/local-issuer.js";
import type { TokenFlags } from "./commands/token.js";

export async function runTokenCreate(f: TokenFlags): Promise<void> {
  const jwt = await mintLocalToken({
    dataDir: f.dataDir,
    trustDomain: f.trustDomain,
    namespace: f.namespace,
    serviceAccount: f.serviceAccount,
    audiences: f.audience,
    ttlSeconds: parseDuration(f.ttl),
  });
  if (f.out) {
    mkdirSync(dirname(f.out), { recursive: true });
    writeFileSync(f.out, jwt, { mode: 0o600 });
  } else process.stdout.write(`${jwt}\n`);
}
