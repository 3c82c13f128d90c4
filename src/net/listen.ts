// Binds a `host:port` as grpc-js does: a host name listens on every address it resolves to, on
// the same port, so a client that resolves `localhost` to ::1 and one that resolves it to
// 127.0.0.1 both reach the server (net.Server.listen(port, name) binds the first address only).
import { lookup } from "node:dns/promises";
import { isIP, type Server } from "node:net";
import type { Log } from "../log/logger.js";

/** An address that is not `host:port`: a flag or setting the user must change. */
export class AddressError extends Error {
  override name = "AddressError";
}

/** `host:port`, `[v6]:port` or `:port` (every IPv4 address); `what` names the flag or setting. */
export function splitHostPort(address: string, what = "the address"): { host: string; port: number } {
  const i = address.lastIndexOf(":");
  const port = Number(address.slice(i + 1));
  if (i < 0 || address.slice(i + 1) === "" || !Number.isInteger(port) || port < 0 || port > 65535)
    throw new AddressError(`${what} ${JSON.stringify(address)} is not host:port (e.g. 127.0.0.1:8443)`);
  return { host: address.slice(0, i).replace(/^\[|\]$/g, "") || "0.0.0.0", port };
}

/** `host:port` again, with an IPv6 host in brackets (Go's net.JoinHostPort): for logs and status. */
export function joinHostPort(host: string, port: number): string {
  return host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
}

export interface ListenOptions<S extends Server> {
  /** `host:port` as configured (named in errors). */
  address: string;
  /** What listens, for errors: "the CA gRPC API", "HTTP", "the tunnel (--listen)". */
  what: string;
  /** A new, unbound server; called once per address. */
  create(): S;
  log: Pick<Log, "warn">;
  /** The addresses of a host name; default the system resolver (dns.lookup, as net does). */
  resolve?: (host: string) => Promise<string[]>;
}

/** Errors of an address this machine cannot bind at all (no IPv6 loopback configured, say). */
const UNAVAILABLE = new Set(["EADDRNOTAVAIL", "EAFNOSUPPORT"]);
/** With port 0, tries with a new port when the first port is taken on another address. */
const PORT_0_ATTEMPTS = 5;

/** Listens on every address of `address`'s host; resolves with the servers and their one port. */
export async function listenOnEveryAddress<S extends Server>(
  o: ListenOptions<S>,
): Promise<{ servers: S[]; port: number }> {
  const { host, port } = splitHostPort(o.address, o.what);
  const hosts = isIP(host) ? [host] : await resolveHost(o, host);
  for (let attempt = 1; ; attempt++) {
    const servers: S[] = [];
    let bound = port;
    /** The first address skipped as unbindable here: the error when none binds. */
    let unavailable: (NodeJS.ErrnoException & { host: string }) | undefined;
    try {
      for (const h of hosts) {
        const server = o.create();
        try {
          await bind(server, bound, h);
        } catch (err) {
          const e = Object.assign(err as NodeJS.ErrnoException, { host: h });
          if (hosts.length === 1 || !UNAVAILABLE.has(e.code ?? "")) throw e;
          unavailable ??= e;
          continue;
        }
        servers.push(server);
        const a = server.address();
        if (typeof a === "object" && a) bound = a.port;
      }
      if (servers.length === 0) throw unavailable!;
      if (unavailable)
        o.log.warn(
          { address: o.address, host: unavailable.host, err: unavailable.message },
          `${o.what}: not listening on ${unavailable.host}, an address of ${host} this machine cannot bind`,
        );
      return { servers, port: bound };
    } catch (err) {
      await closeServers(servers);
      const e = err as NodeJS.ErrnoException & { host: string };
      // The port the first address got is taken on another one: try again with a new port.
      if (port === 0 && servers.length > 0 && e.code === "EADDRINUSE" && attempt < PORT_0_ATTEMPTS) continue;
      const at = e.host === host ? "" : ` (at ${e.host})`;
      throw new Error(
        `cannot listen on ${o.address}${at} for ${o.what}: ${e.message}${fixFor(e.code, port)}`,
        {
          cause: err,
        },
      );
    }
  }
}

/** What to do about a refused bind, by its error code. */
function fixFor(code: string | undefined, port: number): string {
  if (code === "EADDRINUSE")
    return `: another process (or another meshvault) holds port ${port} there; stop it or choose another port`;
  if (code === "EACCES")
    return port < 1024
      ? `: ports below 1024 need privileges (CAP_NET_BIND_SERVICE); choose a port of 1024 or above`
      : ": the system refused the bind; check what restricts this process's network access";
  if (code === "EADDRNOTAVAIL")
    return ": no interface of this machine has that address; use one it has, or 0.0.0.0";
  return "";
}

/** Stops every server listenOnEveryAddress bound; resolves once each has closed. */
export async function closeServers(servers: readonly Server[]): Promise<void> {
  await Promise.all(servers.map((s) => new Promise<void>((r) => s.close(() => r()))));
}

async function resolveHost(o: ListenOptions<Server>, host: string): Promise<string[]> {
  try {
    const found = o.resolve
      ? await o.resolve(host)
      : (await lookup(host, { all: true })).map((a) => a.address);
    if (found.length === 0) throw new Error("no addresses");
    return [...new Set(found)];
  } catch (err) {
    throw new Error(
      `cannot listen on ${o.address} for ${o.what}: the host name ${host} does not resolve ` +
        `(${(err as NodeJS.ErrnoException).code ?? (err as Error).message}); use an IP address or a name this machine resolves`,
      { cause: err },
    );
  }
}

function bind(server: Server, port: number, host: string): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => {
      server.off("error", reject);
      resolve();
    });
  });
}
