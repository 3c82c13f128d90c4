// `meshvault tunnel server|client` run (declared in commands/tunnel.ts): ghostunnel-style mTLS
// proxy with SPIFFE ID authorization, certificates from the agent's files or SDS socket.
import { createLogger } from "../log/logger.js";
import {
  fileCredentialSource,
  sdsCredentialSource,
  startTunnelClient,
  startTunnelServer,
  type CredentialSource,
  type RunningTunnel,
  type TlsVersion,
  type TunnelClientOptions,
  type TunnelServerOptions,
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

/** What both modes take from the common flags. */
type CommonOptions = Pick<
  TunnelServerOptions & TunnelClientOptions,
  "credentials" | "minVersion" | "logger" | "processMetrics" | "status"
>;

/**
 * The wiring both modes share: logger, TLS floor, credentials, status port; `start` adds the
 * mode's own flags. The tunnel and its credentials close on SIGINT/SIGTERM, and the credentials
 * also when the tunnel does not start.
 */
async function runTunnel(
  f: TunnelCommonFlags,
  start: (common: CommonOptions) => Promise<RunningTunnel>,
): Promise<void> {
  const minVersion = tlsVersion(f.minTlsVersion);
  const log = createLogger(logOptionsFromFlags(f, "meshvault-tunnel")).child({ component: "tunnel" });
  const credentials = credentialsFrom(f);
  let t: RunningTunnel;
  try {
    t = await start({
      credentials,
      minVersion,
      logger: log,
      processMetrics: true,
      ...(f.status ? { status: f.status } : {}),
    });
  } catch (err) {
    await credentials.close();
    throw err;
  }
  closeOnSignal({ log, close: () => Promise.all([t.close(), credentials.close()]).then(() => undefined) });
}

export async function runTunnelServer(f: TunnelServerFlags): Promise<void> {
  requireLoopback("--target", f.target, f.unsafeTarget, "--unsafe-target");
  await runTunnel(f, (common) =>
    startTunnelServer({
      ...common,
      listen: f.listen,
      target: f.target,
      allow: f.allow,
      allowAll: f.allowAll ?? false,
    }),
  );
}

export async function runTunnelClient(f: TunnelClientFlags): Promise<void> {
  requireLoopback("--listen", f.listen, f.unsafeListen, "--unsafe-listen");
  await runTunnel(f, (common) =>
    startTunnelClient({
      ...common,
      listen: f.listen,
      connect: f.connect,
      verifySpiffeId: f.verifySpiffeId,
      ...(f.serverName ? { serverName: f.serverName } : {}),
    }),
  );
}
