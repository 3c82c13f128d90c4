// `meshvault status`: what a running server or agent says about itself, as a table (default),
// JSON or YAML. A server answers GET /overview (the status page's data); an agent's
// --status-listen answers GET /_status. Exit 0 when it is ready, 1 when not or unreachable.
// The flags are declared in commands/status.ts.
import { stringify as toYaml } from "yaml";
import { loadServerConfig } from "../config/load.js";
import type { Overview } from "../server/overview.js";
import { relative } from "../server/status-page.js";
import { UsageError } from "./errors.js";
import { classifyTlsFailure } from "../net/tls-failure.js";

interface AgentIdentity {
  name: string;
  state: string;
  spiffeId?: string;
  notAfter?: string;
  renewAt?: string;
  nextAttemptAt?: string;
  lastError?: string;
  issued?: number;
  outputs?: unknown;
}
interface AgentStatus {
  ready: boolean;
  identities: AgentIdentity[];
}

export type StatusDocument =
  ({ kind: "server" } & Overview) | { kind: "agent"; url: string; status: AgentStatus };

/** "127.0.0.1:15014", "http://h:p", ":15014" -> "http://h:p". */
export function baseUrl(address: string): string {
  const a = address.startsWith(":") ? `127.0.0.1${address}` : address;
  const url = /^https?:\/\//.test(a) ? a : `http://${a.replace(/^0\.0\.0\.0:/, "127.0.0.1:")}`;
  return url.replace(/\/+$/, "");
}

async function get(url: string, timeoutMs: number): Promise<Response> {
  try {
    return await fetch(url, { signal: AbortSignal.timeout(timeoutMs) });
  } catch (err) {
    // fetch wraps the socket error (or, for several addresses, an AggregateError of them).
    const cause = (err as { cause?: { code?: string; message?: string; errors?: Error[] } }).cause;
    const text = [cause?.code, cause?.message, ...(cause?.errors ?? []).map((e) => e.message)].join(" ");
    const why =
      (err as Error).name === "TimeoutError" ? "no answer in time" : classifyTlsFailure(text || err).reason;
    throw new Error(
      `cannot reach ${url}: ${why}; is the server's listen.http (or the agent's --status-listen) at this address?`,
      { cause: err },
    );
  }
}

export async function fetchStatus(base: string, timeoutMs = 5000): Promise<StatusDocument> {
  const overview = await get(`${base}/overview`, timeoutMs);
  if (overview.ok) return { ...((await overview.json()) as Overview), kind: "server" };
  const agent = await get(`${base}/_status`, timeoutMs);
  const body = (await agent.json().catch(() => undefined)) as AgentStatus | undefined;
  if (body && Array.isArray(body.identities)) return { kind: "agent", url: base, status: body };
  throw new Error(
    `${base} is neither a meshvault server's HTTP port (no /overview) nor an agent's status port (no /_status with identities)`,
  );
}

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? "").length)));
  return rows
    .map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join("  "))
    .join("\n");
}

const when = (iso: string | undefined): string => (iso ? iso.slice(0, 16).replace("T", " ") : "-");

export function formatStatus(d: StatusDocument, base: string, now = Date.now()): string {
  if (d.kind === "agent") {
    const s = d.status;
    const rows = [
      ["IDENTITY", "SPIFFE ID", "STATE", "EXPIRES", "LEFT", "NEXT ROTATION", "OUTPUTS", "LAST ERROR"],
    ];
    for (const i of s.identities)
      rows.push([
        i.name,
        i.spiffeId ?? "-",
        i.state,
        when(i.notAfter),
        i.notAfter ? relative(i.notAfter, now) : "-",
        when(i.renewAt ?? i.nextAttemptAt),
        i.outputs === undefined ? "-" : typeof i.outputs === "string" ? i.outputs : JSON.stringify(i.outputs),
        i.lastError ?? "",
      ]);
    return `meshvault agent at ${base}: ${s.ready ? "ready" : "NOT READY"}\n\n${table(rows)}\n`;
  }
  const errors = Object.entries(d.issuance.errors).filter(([, n]) => n > 0);
  const span = d.issuance.history.reduce((a, s) => a + s.seconds, 0);
  const recent = d.issuance.history.reduce((a, s) => a + s.issued, 0);
  const head = table([
    ["authority", `${d.authority} (trust domain ${d.trustDomain})`],
    ["ready", d.ready ? "yes" : `NO: ${d.reason ?? ""}`],
    ...(d.vault ? [["vault", d.vault.address]] : []),
    [
      "issued",
      `${d.issuance.issued} since start${span > 0 ? `, ${((recent * 60) / span).toFixed(1)}/min over the last ${Math.max(1, Math.round(span / 60))} min` : ""}`,
    ],
    ["refused", errors.length ? errors.map(([c, n]) => `${c} ${n}`).join(", ") : "none"],
  ]);
  const rows = [["CERTIFICATE", "SUBJECT / SPIFFE ID", "EXPIRES", "LEFT", "RENEWS", "SHA-256"]];
  const add = (role: string, c: Overview["chain"]["roots"][number], renewAt?: string): void => {
    rows.push([
      role,
      c.spiffeId && role.startsWith("serving") ? c.spiffeId : c.subject,
      when(c.notAfter),
      relative(c.notAfter, now),
      renewAt ? when(renewAt) : "-",
      `${c.fingerprint.slice(0, 23)}…`,
    ]);
  };
  d.chain.roots.forEach((c) => add("root", c));
  d.chain.intermediates.forEach((c) => add("intermediate", c));
  if (d.chain.leaf) add("serving (leaf)", d.chain.leaf, d.chain.leaf.renewAt);
  return `meshvault server at ${base}\n\n${head}\n\n${table(rows)}\n`;
}

export async function runStatusCommand(
  address: string | undefined,
  f: { config?: string; output: string },
): Promise<void> {
  if (!["table", "json", "yaml"].includes(f.output))
    throw new UsageError(`--output ${JSON.stringify(f.output)}: use table, json or yaml`);
  const target = address ?? (f.config ? loadServerConfig({ file: f.config }).listen.http : "127.0.0.1:15014");
  const base = baseUrl(target);
  const doc = await fetchStatus(base);
  const out =
    f.output === "json"
      ? `${JSON.stringify(doc, null, 2)}\n`
      : f.output === "yaml"
        ? toYaml(doc)
        : formatStatus(doc, base);
  process.stdout.write(out);
  const ready = doc.kind === "server" ? doc.ready : doc.status.ready;
  process.exitCode = ready ? 0 : 1;
}
