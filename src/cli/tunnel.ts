// `meshvault tunnel server|client`: ghostunnel-style mTLS proxy with SPIFFE ID
// authorization, certificates from the agent's files or SDS socket.
import type { Command } from "commander";
import { createLogger, type Logger } from "../log/logger.js";
import {
  fileCredentialSource,
  sdsCredentialSource,
  startTunnelClient,
  startTunnelServer,
  type CredentialSource,
  type RunningTunnel,
  type TlsVersion,
} from "../tunnel/index.js";
import { UsageError } from "./errors.js";
import { logOptionsFromFlags } from "./log-flags.js";
import { closeOnSignal } from "./shutdown.js";

interface CommonFlags {
  listen: string;
  certDir?: string;
  sds?: string;
  status?: string;
  minTlsVersion: string;
  logLevel?: string;
  logFormat?: string;
}
interface ServerFlags extends CommonFlags {
  target: string;
  unsafeTarget?: boolean;
  allow: string[];
  allowAll?: boolean;
}
interface ClientFlags extends CommonFlags {
  connect: string;
  unsafeListen?: boolean;
  verifySpiffeId: string[];
  serverName?: string;
}

const collect = (v: string, prev: string[] = []): string[] => [...prev, v];

function credentialsFrom(f: CommonFlags): CredentialSource {
  if (f.certDir && f.sds) throw new UsageError("use either --cert-dir or --sds, not both");
  if (f.certDir) return fileCredentialSource(f.certDir);
  if (f.sds) return sdsCredentialSource(f.sds);
  throw new UsageError(
    "tunnel needs certificates: --cert-dir <dir> (meshvault agent --out-dir) or --sds unix:///path/to/socket (meshvault agent --sds-socket)",
  );
}

/** True for localhost, 127.0.0.0/8 and ::1: addresses only this machine can reach. */
export function isLoopback(address: string): boolean {
  const host = address.slice(0, address.lastIndexOf(":")).replace(/^\[|\]$/g, "");
  return host === "localhost" || host === "::1" || /^127(\.\d{1,3}){3}$/.test(host);
}

/**
 * Plaintext sides stay on this machine unless the operator says otherwise (ghostunnel's
 * --unsafe-listen / --unsafe-target): anyone who can reach them speaks with the tunnel's identity.
 */
function requireLoopback(flag: string, address: string, unsafe: boolean | undefined, override: string): void {
  if (!unsafe && !isLoopback(address))
    throw new UsageError(
      `${flag} ${address} is not a loopback address: its plaintext side would be reachable from the network, and anyone reaching it ${flag === "--listen" ? "connects with this workload's identity" : "receives traffic admitted by the tunnel"}; use 127.0.0.1 (or localhost), or pass ${override} if that is intended`,
    );
}

function tlsVersion(v: string): TlsVersion {
  if (v === "1.3" || v === "TLSv1.3") return "TLSv1.3";
  if (v === "1.2" || v === "TLSv1.2") return "TLSv1.2";
  throw new UsageError(`--min-tls-version ${JSON.stringify(v)}: use 1.2 or 1.3`);
}

function loggerFor(f: CommonFlags): Logger {
  return createLogger(logOptionsFromFlags(f, "meshvault-tunnel")).child({ component: "tunnel" });
}

function runUntilSignal(t: RunningTunnel, creds: CredentialSource, log: Logger): void {
  closeOnSignal({ log, close: () => Promise.all([t.close(), creds.close()]).then(() => undefined) });
}

function common(cmd: Command): Command {
  return cmd
    .option(
      "--cert-dir <dir>",
      "read cert-chain.pem, key.pem, root-cert.pem from this directory (reloaded on change)",
    )
    .option(
      "--sds <address>",
      "read certificates from an agent's SDS socket, e.g. unix:///run/meshvault/sleep.sock",
    )
    .option("--status <host:port>", "serve /_status and /_metrics here")
    .option("--min-tls-version <version>", "1.2 or 1.3", "1.3")
    .option("--log-level <level>", "trace, debug, info, warn, error (default info)")
    .option("--log-format <format>", "json or pretty (default: pretty on a terminal, else json)");
}

export function registerTunnelCommand(program: Command): void {
  const tunnel = program
    .command("tunnel")
    .description("mTLS tunnel with SPIFFE ID authorization, for workloads without Envoy (ghostunnel-like)");

  common(
    tunnel
      .command("server")
      .description("accept mTLS from allowed SPIFFE IDs and forward plaintext to --target")
      .requiredOption("--listen <host:port>", "address to accept mTLS on")
      .requiredOption("--target <host:port>", "plaintext service to forward to")
      .option(
        "--allow <spiffe-id>",
        "admit this SPIFFE ID or spiffe://<td>/ns/<ns>/* pattern; repeatable",
        collect,
        [],
      )
      .option("--allow-all", "admit any peer whose certificate chains to the trust bundle")
      .option("--unsafe-target", "allow a --target that is not on loopback (plaintext over the network)"),
  ).action(async (f: ServerFlags) => {
    requireLoopback("--target", f.target, f.unsafeTarget, "--unsafe-target");
    const log = loggerFor(f);
    const credentials = credentialsFrom(f);
    const t = await startTunnelServer({
      listen: f.listen,
      target: f.target,
      allow: f.allow,
      allowAll: f.allowAll ?? false,
      credentials,
      minVersion: tlsVersion(f.minTlsVersion),
      logger: log,
      processMetrics: true,
      ...(f.status ? { status: f.status } : {}),
    });
    runUntilSignal(t, credentials, log);
  });

  common(
    tunnel
      .command("client")
      .description("accept plaintext on --listen and forward it over mTLS to --connect")
      .requiredOption("--listen <host:port>", "local plaintext address (keep it on loopback)")
      .requiredOption("--connect <host:port>", "the tunnel server to connect to")
      .option(
        "--verify-spiffe-id <spiffe-id>",
        "the server must present this SPIFFE ID (or match this pattern); repeatable",
        collect,
        [],
      )
      .option("--server-name <name>", "SNI to send")
      .option(
        "--unsafe-listen",
        "allow a --listen address that is not on loopback (plaintext from the network)",
      ),
  ).action(async (f: ClientFlags) => {
    requireLoopback("--listen", f.listen, f.unsafeListen, "--unsafe-listen");
    const log = loggerFor(f);
    const credentials = credentialsFrom(f);
    const t = await startTunnelClient({
      listen: f.listen,
      connect: f.connect,
      verifySpiffeId: f.verifySpiffeId,
      credentials,
      minVersion: tlsVersion(f.minTlsVersion),
      logger: log,
      processMetrics: true,
      ...(f.serverName ? { serverName: f.serverName } : {}),
      ...(f.status ? { status: f.status } : {}),
    });
    runUntilSignal(t, credentials, log);
  });
}
