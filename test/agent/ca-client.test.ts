// CA clients in one process share one TLS connection to the same CA (same roots, same
// options); the public key the agent checks the leaf against is the one in its CSR.
import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import net from "node:net";
import { readFileSync } from "node:fs";
import { createCaClient } from "../../src/agent/index.js";
import { csrSubjectPublicKeyInfo } from "../../src/agent/issued.js";
import { buildCsr } from "../../src/pki/csr.js";
import { generateKeyPairFor, spkiDer, type KeyAlgorithm } from "../../src/pki/keys.js";
import { startCaFixture, type CaFixture } from "./ca-fixture.js";
import { GRPC_SERVERS } from "../../src/config/schema.js";

// Both gRPC servers of the CA API (config grpcServer) serve our agent's client.
for (const grpcServer of GRPC_SERVERS)
  describe(`our CA client against the CA API over ${grpcServer}`, () => {
    let ca: CaFixture;
    let proxy: net.Server;
    let proxyAddress: string;
    let connections = 0;
    const sockets = new Set<net.Socket>();

    before(async () => {
      ca = await startCaFixture({ grpcServer });
      // A TCP forwarder in front of the CA that counts connections.
      proxy = net.createServer((down) => {
        connections++;
        const up = net.connect(ca.server.grpcPort, "127.0.0.1");
        for (const s of [down, up]) {
          sockets.add(s);
          s.on("error", () => {});
          s.on("close", () => sockets.delete(s));
        }
        down.pipe(up).pipe(down);
      });
      await new Promise<void>((r) => proxy.listen(0, "127.0.0.1", r));
      proxyAddress = `localhost:${(proxy.address() as net.AddressInfo).port}`;
    });
    after(async () => {
      for (const s of sockets) s.destroy();
      await new Promise((r) => proxy.close(r));
      await ca.dispose();
    });

    async function issue(client: Awaited<ReturnType<typeof createCaClient>>, sa: string): Promise<void> {
      const { privateKey } = generateKeyPairFor("ec-p256");
      const csrPem = buildCsr(privateKey, { uris: [`spiffe://cluster.local/ns/default/sa/${sa}`] });
      const token = readFileSync(await ca.token("default", sa), "utf8");
      const chain = await client.createCertificate({ csrPem, validitySeconds: 3600, token });
      assert.ok(chain.length >= 2);
    }

    test("clients with the same CA and roots share one connection; shareChannel: false opens its own", async () => {
      const a = await createCaClient({ address: proxyAddress, rootCertFile: ca.rootCertFile });
      const b = await createCaClient({ address: proxyAddress, rootCertFile: ca.rootCertFile });
      const own = await createCaClient({
        address: proxyAddress,
        rootCertFile: ca.rootCertFile,
        shareChannel: false,
      });
      try {
        await issue(a, "a");
        await issue(b, "b");
        await issue(a, "a2");
        assert.equal(connections, 1, "two clients, one TLS connection");
        await issue(own, "c");
        assert.equal(connections, 2);
        // Closing one sharing client leaves the connection to the other.
        a.close();
        await issue(b, "b2");
        assert.equal(connections, 2);
      } finally {
        a.close();
        b.close();
        own.close();
      }
    });
  });

test("the SubjectPublicKeyInfo read from our CSR is the key's own export", () => {
  for (const alg of ["ec-p256", "ec-p384", "rsa-2048", "ed25519"] as KeyAlgorithm[]) {
    const { privateKey, publicKey } = generateKeyPairFor(alg);
    const csrPem = buildCsr(privateKey, { uris: ["spiffe://cluster.local/ns/a/sa/b"] });
    assert.deepEqual(csrSubjectPublicKeyInfo(csrPem), spkiDer(publicKey), alg);
  }
  assert.throws(() =>
    csrSubjectPublicKeyInfo("-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n"),
  );
});
