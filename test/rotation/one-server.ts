// Shared by the single-server rotation tests (cross-sign, import-root, vault-sign): one server
// process on OpenBao that follows rotations quickly, a CreateCertificate call to it as a
// workload, and openssl's verdict on a returned chain.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { mintLocalToken } from "../../src/identity/local-issuer.js";
import { buildCsr } from "../../src/pki/csr.js";
import { generateKeyPairFor } from "../../src/pki/keys.js";
import { caClient } from "../helpers/ca-client.js";
import { startOpenBao, type OpenBao } from "../helpers/openbao.js";
import { opensslVerify } from "../helpers/openssl.js";
import { startServerProcess, type ServerProcess } from "../helpers/server-process.js";
import { mountRoot } from "./drive.js";

export interface OneServer {
  dir: string;
  bao: OpenBao;
  server: ServerProcess;
  stop(): Promise<void>;
}

/** A temp dir, OpenBao (`prepare`d: default a root at pki), and startRotationServer on it. */
export async function startOneServer(
  name: string,
  authority: Record<string, unknown>,
  prepare: (bao: OpenBao) => Promise<void> = (bao) => mountRoot(bao, "mesh root 1"),
): Promise<OneServer> {
  const dir = mkdtempSync(join(tmpdir(), `meshvault-rotation-${name}-`));
  const bao = await startOpenBao();
  let server: ServerProcess | undefined;
  const stop = async (): Promise<void> => {
    await server?.stop();
    await bao.stop();
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    await prepare(bao);
    server = await startRotationServer(name, dir, bao, authority);
  } catch (err) {
    await stop();
    throw err;
  }
  return { dir, bao, server, stop };
}

/** `authority` with the root token, 20 s leaves, the rotation state polled every second. */
export function startRotationServer(
  name: string,
  dir: string,
  bao: OpenBao,
  authority: Record<string, unknown>,
): Promise<ServerProcess> {
  return startServerProcess(
    name,
    dir,
    {
      authority,
      vault: { address: bao.addr, auth: { method: "token" } },
      certificates: { defaultTtl: "20s", maxTtl: "20s" },
      rotation: { pollInterval: "1s" },
    },
    { VAULT_TOKEN: bao.rootToken },
  );
}

/** default/sleep's CreateCertificate response: leaf, each intermediate, the bundle. */
export async function createCertificate(server: ServerProcess, serviceAccount = "sleep"): Promise<string[]> {
  const client = caClient(server.grpc, await (await fetch(`http://${server.http}/roots`)).text());
  try {
    const token = await mintLocalToken({
      dataDir: server.dataDir,
      trustDomain: "cluster.local",
      namespace: "default",
      serviceAccount,
    });
    return await client.create(buildCsr(generateKeyPairFor("ec-p256").privateKey, {}), { token });
  } finally {
    client.close();
  }
}

/** openssl verify: `leafPem` through `untrusted` to `rootPem` alone. */
export function verifiesUnder(leafPem: string, untrusted: string[], rootPem: string): boolean {
  return opensslVerify(rootPem, untrusted.join(""), leafPem, "any")[0];
}
