// meshvault's own service-account-style token issuer, for machines without
// Kubernetes: the server trusts its JWKS, `meshvault token create` mints tokens
// shaped like Kubernetes projected tokens (so the same authenticator reads both).
import { createPrivateKey, createPublicKey, randomUUID } from "node:crypto";
import { existsSync, mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { exportJWK, SignJWT } from "jose";
import { writeFileAtomicSync } from "../fs/atomic-write.js";
import { generateKeyPairFor, privateKeyPem } from "../pki/keys.js";
import { workloadId } from "../pki/spiffe.js";

export interface LocalIssuerPaths {
  dir: string;
  keyFile: string;
  jwksFile: string;
}

export function localIssuerPaths(dataDir: string): LocalIssuerPaths {
  const dir = join(dataDir, "local-issuer");
  return { dir, keyFile: join(dir, "signing-key.pem"), jwksFile: join(dir, "jwks.json") };
}

/** The `iss` of locally minted tokens. */
export function localIssuerName(trustDomain: string): string {
  return `meshvault-local://${trustDomain}`;
}

/** Creates the signing key (0600) and public JWKS on first use; returns the paths. */
export async function ensureLocalIssuer(dataDir: string): Promise<LocalIssuerPaths> {
  const paths = localIssuerPaths(dataDir);
  mkdirSync(paths.dir, { recursive: true, mode: 0o700 });
  if (!existsSync(paths.keyFile)) {
    const { privateKey } = generateKeyPairFor("ec-p256");
    writeFileAtomicSync(paths.keyFile, privateKeyPem(privateKey), 0o600);
  }
  const pub = createPublicKey(createPrivateKey(readFileSync(paths.keyFile, "utf8")));
  const jwk = { ...(await exportJWK(pub)), alg: "ES256", use: "sig", kid: "meshvault-local-1" };
  const jwks = JSON.stringify({ keys: [jwk] }, null, 2);
  if (!existsSync(paths.jwksFile) || readFileSync(paths.jwksFile, "utf8") !== jwks)
    writeFileAtomicSync(paths.jwksFile, jwks, 0o644);
  return paths;
}

export interface TokenRequest {
  dataDir: string;
  trustDomain: string;
  namespace: string;
  serviceAccount: string;
  audiences?: string[];
  ttlSeconds?: number;
}

/** Mints a Kubernetes-projected-token-shaped JWT signed by the local issuer. */
export async function mintLocalToken(req: TokenRequest): Promise<string> {
  // The same check the server applies: a token for a name that cannot be a Kubernetes
  // namespace/service account (e.g. "kube-system/sa/admin") is never minted.
  workloadId(req.trustDomain, req.namespace, req.serviceAccount);
  const paths = await ensureLocalIssuer(req.dataDir);
  const key = createPrivateKey(readFileSync(paths.keyFile, "utf8"));
  return new SignJWT({
    "kubernetes.io": {
      namespace: req.namespace,
      serviceaccount: { name: req.serviceAccount, uid: randomUUID() },
    },
  })
    .setProtectedHeader({ alg: "ES256", kid: "meshvault-local-1", typ: "JWT" })
    .setIssuer(localIssuerName(req.trustDomain))
    .setSubject(`system:serviceaccount:${req.namespace}:${req.serviceAccount}`)
    .setAudience(req.audiences ?? ["istio-ca"])
    .setIssuedAt()
    .setNotBefore("0s")
    .setExpirationTime(Math.floor(Date.now() / 1000) + (req.ttlSeconds ?? 43200))
    .sign(key);
}
