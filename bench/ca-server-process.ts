// The CA server in its own process, so load generation does not share its event loop.
// Prints "READY <grpcPort>" on stdout when serving. When spawned with an IPC channel it
// answers "cpu" with its process.cpuUsage() (all threads), so benchmarks can report the
// server's CPU per certificate separately from the load generator's.
import { loadServerConfig } from "../src/config/load.js";
import { startCaServer } from "../src/server/run.js";
import { silentLogger } from "../src/log/logger.js";

const dataDir = process.argv[2]!;
const config = loadServerConfig({
  env: {},
  overrides: { dataDir, "listen.grpc": "127.0.0.1:0", "listen.http": "127.0.0.1:0" },
});
const server = await startCaServer(config, { log: silentLogger(), defaultMetrics: false });
await server.firstAttempt;
process.stdout.write(`READY ${server.grpcPort}\n`);
process.on("SIGTERM", () => void server.close().then(() => process.exit(0)));
if (process.send) {
  process.on("message", (m: unknown) => {
    if (m === "cpu") process.send!({ cpu: process.cpuUsage() });
  });
  process.on("disconnect", () => void server.close().then(() => process.exit(0)));
}
