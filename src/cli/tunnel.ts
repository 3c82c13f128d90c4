// `meshvault tunnel server|client` run (declared in commands/tunnel.ts): ghostunnel-style mTLS
// proxy with SPIFFE ID authorization, certificates from the agent's files or SDS socket.
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
import type { TunnelClientFlags, TunnelCommonFlags, TunnelServerFlags } from "./commands/tunnel.js";
import { UsageError } from "./errors.js";
import { logOptionsFromFlags } from "./log-flags.js";
import { splitHostPort } from "../net/listen.js";
import { closeOnSignal } from "./shutdown.js";

function credentialsFrom(f: TunnelCommonFlags): CredentialSource {
  if (f.certDir && f.sds) throw new UsageError("use either --cert-dir or --sds, not both");
  if (f.certDir) return fileCredentialSource(f.certDir);
  if (f.sds) return sdsCredentialSource(f.sds);
  throw new UsageError(
    "tunnel needs certificates: --cert-dir <dir> (meshvault agent --out-dir) or --sds unix:///path/to/socket (meshvault agent --sds-socket)",
  );
}

/** True for localhost, 127.0.0.0/8 and ::1: addresses only this machine can reach. */
function isLoopback(flag: string, address: string): boolean {
  const { host } = splitHostPort(address, flag);
  return host === "localhost" || host === "::1" || /^127(\.\d{1,3}){3}$/.test(host);
}

/**
 * Plaintext sides stay on this machine unless the operator says otherwise (ghostunnel's
 * --unsafe-listen / --unsafe-target): anyone who can reach them speaks with the tunnel's identity.
 */
function requireLoopback(flag: string, address: string, unsafe: boolean | undefined, override: string): void {
  if (!unsafe && !isLoopback(flag, address))
    throw new UsageError(
      `${flag} ${address} is not a loopback address: its plaintext side would be reachable from the network, and anyone reaching it ${flag === "--listen" ? "connects with this workload's identity" : "receives traffic admitted by the tunnel"}; use 127.0.0.1 (or localhost), or pass ${override} if that is intended`,
    );
}

function tlsVersion(v: string): TlsVersion {
  if (v === "1.3" || v === "TLSv1.3") return "TLSv1.3";
  if (v === "1.2" || v === "TLSv1.2") return "TLSv1.2";
  throw new UsageError(`--min-tls-version ${JSON.stringify(v)}: use 1.2 or 1.3`);
}

function loggerFor(f: TunnelCommonFlags): Logger {
  return createLogger(logOptionsFromFlags(f, "meshvault-tunnel")).child({ component: "tunnel" });
}

function runUntilSignal(t: RunningTunnel, creds: CredentialSource, log: Logger): void {
  closeOnSignal({ log, close: () => Promise.all([t.close(), creds.close()]).then(() => undefined) });
}

export async function runTunnelServer(f: TunnelServerFlags): Promise<void> {
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
}

export async function runTunnelClient(f: TunnelClientFlags): Promise<void> {
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
}
