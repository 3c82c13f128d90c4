// `meshvault tunnel server|client`: the declaration (flags, help); the tunnel loads only when
// one runs (../tunnel.ts).
import type { Command } from "commander";
import { collect } from "./repeatable.js";

export interface TunnelCommonFlags {
  listen: string;
  certDir?: string;
  sds?: string;
  status?: string;
  minTlsVersion: string;
  logLevel?: string;
  logFormat?: string;
}
export interface TunnelServerFlags extends TunnelCommonFlags {
  target: string;
  unsafeTarget?: boolean;
  allow: string[];
  allowAll?: boolean;
}
export interface TunnelClientFlags extends TunnelCommonFlags {
  connect: string;
  unsafeListen?: boolean;
  verifySpiffeId: string[];
  serverName?: string;
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
  ).action(async (f: TunnelServerFlags) => (await import("../tunnel.js")).runTunnelServer(f));

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
  ).action(async (f: TunnelClientFlags) => (await import("../tunnel.js")).runTunnelClient(f));
}
