// A listen address with a host name binds every address the name resolves to, on one port:
// the CA gRPC API (both transports) and the HTTP port on `localhost:0` answer on each of
// localhost's addresses; since localhost may name 127.0.0.1 only (as in many containers), the
// node-http2 server, the HTTP port and listenOnEveryAddress are also given a name for both
// 127.0.0.1 and ::1, serve both, and name the address a bind failed on. Real sockets, real TLS.
import { test } from "node:test";
import assert from "node:assert/strict";
import * as http2 from "node:http2";
import { once } from "node:events";
import { lookup } from "node:dns/promises";
import { createServer, connect as tcpConnect } from "node:net";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { loadServerConfig } from "../../src/config/load.js";
import { GRPC_SERVERS } from "../../src/config/schema.js";
import { silentLog, silentLogger } from "../../src/log/logger.js";
import { startCaServer } from "../../src/server/run.js";
import { joinHostPort, listenOnEveryAddress, splitHostPort } from "../../src/net/listen.js";
import { busyPort, ipv6Loopback } from "../helpers/ports.js";
import { within } from "../helpers/wait.js";

/** A TCP connection to host:port that the server accepted (the handshake is the client's part). */
async function reaches(host: string, port: number): Promise<void> {
  const s = tcpConnect(port, host);
  try {
    await within(`a connection to [${host}]:${port}`, once(s, "connect"));
  } finally {
    s.destroy();
  }
}

/** Starts the server on `host:0` for both ports; checks gRPC (TLS) and HTTP answer on each address. */
async function servesOnEach(
  dir: string,
  grpcServer: (typeof GRPC_SERVERS)[number],
  host: string,
  addresses: string[],
  resolveHost?: (host: string) => Promise<string[]>,
): Promise<void> {
  const config = loadServerConfig({
    env: {},
    overrides: {
      dataDir: join(dir, `${grpcServer}-${host}`),
      "listen.grpc": `${host}:0`,
      "listen.http": `${host}:0`,
      grpcServer,
    },
  });
  const server = await startCaServer(config, {
    log: silentLogger(),
    defaultMetrics: false,
    ...(resolveHost ? { resolveHost } : {}),
  });
  try {
    await server.started;
    for (const address of addresses) {
      const url = address.includes(":") ? `[${address}]` : address;
      // gRPC: a TLS session the server completes, with its certificate for localhost.
      const client = http2.connect(`https://${url}:${server.grpcPort}`, {
        ca: server.rootsPem(),
        servername: "localhost",
      });
      client.on("error", () => {});
      try {
        await within(`${grpcServer} on ${host} over ${address}`, once(client, "connect"));
      } finally {
        client.destroy();
      }
      const r = await fetch(`http://${url}:${server.httpPort}/healthz`);
      assert.equal(r.status, 200, `HTTP on ${host} over ${address}`);
    }
  } finally {
    await server.close();
  }
}

test("the CA server on localhost:0 answers gRPC and HTTP on every address localhost resolves to", async (t) => {
  const addresses = [...new Set((await lookup("localhost", { all: true })).map((a) => a.address))];
  const v6 = await ipv6Loopback();
  if (!addresses.includes("::1")) t.diagnostic(`localhost resolves to ${addresses.join(", ")} only here`);
  const dir = mkdtempSync(join(tmpdir(), "meshvault-listen-"));
  try {
    for (const grpcServer of GRPC_SERVERS)
      await servesOnEach(
        dir,
        grpcServer,
        "localhost",
        addresses.filter((a) => a !== "::1" || v6),
      );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("the CA server on a name for 127.0.0.1 and ::1 answers node-http2 gRPC and HTTP over both", async (t) => {
  if (!(await ipv6Loopback())) return t.skip("no IPv6 loopback on this machine (binding ::1 failed)");
  const dir = mkdtempSync(join(tmpdir(), "meshvault-listen-"));
  try {
    // The name is resolved by the test (grpc-js resolves names itself: it is checked above).
    const both = async (): Promise<string[]> => ["127.0.0.1", "::1"];
    await servesOnEach(dir, "node-http2", "both-loopbacks.test", ["127.0.0.1", "::1"], both);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("a name for 127.0.0.1 and ::1 on port 0 listens on both, on the one port the first bind got", async (t) => {
  if (!(await ipv6Loopback())) return t.skip("no IPv6 loopback on this machine (binding ::1 failed)");
  const resolve = async (): Promise<string[]> => ["127.0.0.1", "::1"];
  const { servers, port } = await listenOnEveryAddress({
    address: "both-loopbacks.test:0",
    what: "the test",
    create: () => createServer((s) => s.end()),
    log: silentLog,
    resolve,
  });
  try {
    assert.equal(servers.length, 2);
    await reaches("127.0.0.1", port);
    await reaches("::1", port);
  } finally {
    for (const s of servers) s.close();
  }
});

test("a port taken on one of the name's addresses is refused naming that address", async (t) => {
  if (!(await ipv6Loopback())) return t.skip("no IPv6 loopback on this machine (binding ::1 failed)");
  const blocker = await busyPort("::1");
  const port = blocker.port;
  try {
    await assert.rejects(
      listenOnEveryAddress({
        address: `both-loopbacks.test:${port}`,
        what: "the test",
        create: () => createServer(),
        log: silentLog,
        resolve: async () => ["127.0.0.1", "::1"],
      }),
      new RegExp(
        `^Error: cannot listen on both-loopbacks.test:${port} \\(at ::1\\) for the test: .*EADDRINUSE`,
      ),
    );
    // Nothing is left bound on 127.0.0.1.
    const again = createServer();
    await new Promise<void>((resolve, reject) => {
      again.once("error", reject);
      again.listen(port, "127.0.0.1", () => resolve());
    });
    again.close();
  } finally {
    blocker.close();
  }
});

test("a host name that does not resolve is refused naming the name and the fix", async () => {
  await assert.rejects(
    listenOnEveryAddress({
      address: "no-such-host.invalid:15012",
      what: "the CA gRPC API",
      create: () => createServer(),
      log: silentLog,
    }),
    /cannot listen on no-such-host.invalid:15012 for the CA gRPC API: the host name no-such-host.invalid does not resolve \(.+\); use an IP address or a name this machine resolves/,
  );
});

test("host:port splits and joins back, an IPv6 host in brackets; :port is every IPv4 address", () => {
  for (const [address, shown] of [
    ["127.0.0.1:8443", "127.0.0.1:8443"],
    ["[::1]:8443", "[::1]:8443"],
    ["localhost:0", "localhost:0"],
    [":15012", "0.0.0.0:15012"],
  ] as const) {
    const { host, port } = splitHostPort(address);
    assert.equal(joinHostPort(host, port), shown, address);
  }
});
