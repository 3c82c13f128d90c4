// GET / on the HTTP port: one self-contained HTML page (no scripts, fonts or images from
// anywhere; inline CSS and SVG) showing what `meshvault status` prints: readiness and its
// reason, the chain as a diagram, each certificate's life with "now" and its renewal point,
// and issuance over the last minutes. It refreshes itself every 10 seconds.
import type { CertSummary, Overview } from "./overview.js";

const esc = (s: unknown): string => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

/** "in 364d 23h", "3h 20m ago". */
export function relative(iso: string, now: number): string {
  const ms = new Date(iso).getTime() - now;
  const s = Math.abs(ms) / 1000;
  const parts =
    s >= 86400
      ? [`${Math.floor(s / 86400)}d`, `${Math.floor((s % 86400) / 3600)}h`]
      : s >= 3600
        ? [`${Math.floor(s / 3600)}h`, `${Math.floor((s % 3600) / 60)}m`]
        : [`${Math.floor(s / 60)}m`, `${Math.floor(s % 60)}s`];
  const text = parts.filter((p) => !/^0[dhms]$/.test(p)).join(" ") || "0s";
  return ms >= 0 ? `in ${text}` : `${text} ago`;
}

const short = (fp: string): string => fp.split(":").slice(0, 7).join(":") + ":…";

interface Row {
  role: string;
  cert: CertSummary;
  renewAt?: string;
}

function chainDiagram(rows: Row[], now: number): string {
  const w = 250;
  const h = 118;
  const gap = 50;
  const width = rows.length * w + (rows.length - 1) * gap + 20;
  const boxes = rows
    .map((r, i) => {
      const x = 10 + i * (w + gap);
      const expired = new Date(r.cert.notAfter).getTime() < now;
      // CAs by their subject, the leaf by its identity.
      const name = r.role.startsWith("serving") ? (r.cert.spiffeId ?? r.cert.subject) : r.cert.subject;
      const arrow =
        i < rows.length - 1
          ? `<line x1="${x + w}" y1="${10 + h / 2}" x2="${x + w + gap - 6}" y2="${10 + h / 2}" class="arrow" marker-end="url(#head)"/>` +
            `<text x="${x + w + gap / 2}" y="${h / 2}" class="signs">signs</text>`
          : "";
      return `<g class="cert ${expired ? "expired" : ""}" data-role="${esc(r.role)}" data-fingerprint="${esc(r.cert.fingerprint)}" data-not-after="${esc(r.cert.notAfter)}">
  <rect x="${x}" y="10" width="${w}" height="${h}" rx="8"/>
  <text x="${x + 10}" y="30" class="role">${esc(r.role)}</text>
  <text x="${x + 10}" y="50" class="name">${esc(name.length > 33 ? name.slice(0, 32) + "…" : name)}</text>
  <text x="${x + 10}" y="70" class="fp">SHA-256 ${esc(short(r.cert.fingerprint))}</text>
  <text x="${x + 10}" y="90" class="exp">expires ${esc(r.cert.notAfter.slice(0, 10))} (${esc(relative(r.cert.notAfter, now))})</text>
  <text x="${x + 10}" y="110" class="fp">serial ${esc(r.cert.serial.slice(0, 16))}</text>
  <title>${esc(`${r.role}: ${r.cert.subject}\nissuer ${r.cert.issuer}\nSHA-256 ${r.cert.fingerprint}\n${r.cert.notBefore} .. ${r.cert.notAfter}`)}</title>
</g>${arrow}`;
    })
    .join("\n");
  return `<svg id="chain" role="img" aria-label="trust chain" viewBox="0 0 ${width} ${h + 20}" width="${width}" height="${h + 20}">
<defs><marker id="head" markerWidth="8" markerHeight="8" refX="7" refY="4" orient="auto"><path d="M0,0 L8,4 L0,8 z" class="head"/></marker></defs>
${boxes}
</svg>`;
}

function timeline(rows: Row[], now: number): string {
  const width = 720;
  const lines = rows
    .map((r, i) => {
      const from = new Date(r.cert.notBefore).getTime();
      const to = new Date(r.cert.notAfter).getTime();
      const frac = (t: number): number => Math.min(1, Math.max(0, (t - from) / Math.max(1, to - from)));
      const y = 20 + i * 46;
      const x0 = 150;
      const span = width - x0 - 10;
      const nowX = x0 + frac(now) * span;
      const renew = r.renewAt
        ? `<line x1="${x0 + frac(new Date(r.renewAt).getTime()) * span}" y1="${y - 4}" x2="${x0 + frac(new Date(r.renewAt).getTime()) * span}" y2="${y + 18}" class="renew"><title>renews ${esc(r.renewAt)}</title></line>`
        : "";
      return `<g class="life" data-role="${esc(r.role)}">
  <text x="0" y="${y + 12}" class="role">${esc(r.role)}</text>
  <rect x="${x0}" y="${y}" width="${span}" height="14" rx="3" class="span"/>
  <rect x="${x0}" y="${y}" width="${Math.max(0, nowX - x0)}" height="14" rx="3" class="used"/>
  ${renew}
  <line x1="${nowX}" y1="${y - 6}" x2="${nowX}" y2="${y + 20}" class="now"/>
  <text x="${x0}" y="${y + 32}" class="small">${esc(r.cert.notBefore.slice(0, 16).replace("T", " "))}</text>
  <text x="${x0 + span}" y="${y + 32}" class="small end">expires ${esc(r.cert.notAfter.slice(0, 16).replace("T", " "))} (${esc(relative(r.cert.notAfter, now))})</text>
</g>`;
    })
    .join("\n");
  return `<svg id="timeline" role="img" aria-label="expiry timeline" viewBox="0 0 ${width} ${rows.length * 46 + 20}" width="${width}" height="${rows.length * 46 + 20}">
${lines}
</svg>
<p class="legend"><span class="k now"></span> now <span class="k renew"></span> renewal point <span class="k used"></span> life used</p>`;
}

function issuance(o: Overview): string {
  const h = o.issuance.history;
  const width = 720;
  const height = 90;
  const max = Math.max(1, ...h.map((s) => s.issued + s.errors));
  const bw = h.length ? width / h.length : width;
  const bars = h
    .map((s, i) => {
      const hi = (s.issued / max) * height;
      const he = (s.errors / max) * height;
      return `<g><title>${esc(`${s.at.slice(11, 19)}: ${s.issued} issued, ${s.errors} errors in ${Math.round(s.seconds)}s`)}</title>
<rect x="${i * bw + 1}" y="${height - hi}" width="${Math.max(1, bw - 2)}" height="${hi}" class="ok"/>
<rect x="${i * bw + 1}" y="${height - hi - he}" width="${Math.max(1, bw - 2)}" height="${he}" class="err"/></g>`;
    })
    .join("");
  const span = h.reduce((a, s) => a + s.seconds, 0);
  const issued = h.reduce((a, s) => a + s.issued, 0);
  const errors = h.reduce((a, s) => a + s.errors, 0);
  const perMin = (n: number): string => (span > 0 ? ((n * 60) / span).toFixed(1) : "0.0");
  const codes = Object.entries(o.issuance.errors)
    .filter(([, n]) => n > 0)
    .map(([c, n]) => `<tr><td>${esc(c)}</td><td>${n}</td></tr>`)
    .join("");
  const over = span >= 90 ? `${Math.round(span / 60)} min` : `${Math.round(span)} s`;
  return `<p id="rate">last ${over}: <b>${perMin(issued)}</b> issued/min, <b>${perMin(errors)}</b> errors/min; since start: <b id="issued-total">${o.issuance.issued}</b> issued, <b>${Object.values(o.issuance.errors).reduce((a, b) => a + b, 0)}</b> refused</p>
<svg id="issuance" role="img" aria-label="issuance over the last minutes" viewBox="0 0 ${width} ${height}" width="${width}" height="${height}">${bars}</svg>
${codes ? `<table id="errors"><tr><th>refused with</th><th>count</th></tr>${codes}</table>` : `<p id="errors">no refused requests</p>`}`;
}

export function renderStatusPage(o: Overview): string {
  const now = new Date(o.now).getTime();
  const rows: Row[] = [
    ...o.chain.roots.map((cert, i) => ({ role: o.chain.roots.length > 1 ? `root ${i + 1}` : "root", cert })),
    ...o.chain.intermediates.map((cert) => ({ role: "intermediate", cert })),
    ...(o.chain.leaf ? [{ role: "serving (leaf)", cert: o.chain.leaf, renewAt: o.chain.leaf.renewAt }] : []),
  ];
  const ready = o.ready
    ? `<span id="readiness" class="badge ready">ready</span>`
    : `<span id="readiness" class="badge notready">not ready</span> <span id="reason">${esc(o.reason ?? "")}</span>`;
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="refresh" content="10">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>meshvault: ${esc(o.authority)} (${o.ready ? "ready" : "not ready"})</title>
<style>
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px;color:#1d2433;background:#f7f8fa}
h1{font-size:20px;margin:0 0 4px} h2{font-size:16px;margin:24px 0 8px}
.meta{color:#5b6475}
.badge{display:inline-block;padding:2px 10px;border-radius:12px;font-weight:600;color:#fff}
.ready{background:#1f883d}.notready{background:#cf222e}
#reason{color:#cf222e}
svg text{font:12px ui-monospace,Menlo,Consolas,monospace;fill:#1d2433}
.cert rect{fill:#fff;stroke:#5b6475;stroke-width:1.5}.cert.expired rect{stroke:#cf222e;fill:#ffebe9}
.cert .role,.life .role{font-weight:700;font-family:system-ui,sans-serif}
.arrow{stroke:#5b6475;stroke-width:2}.head{fill:#5b6475}.signs{text-anchor:middle;fill:#5b6475}
.span{fill:#dfe3ea}.used{fill:#8fb3e6}.now{stroke:#cf222e;stroke-width:2}.renew{stroke:#1f883d;stroke-width:3;stroke-dasharray:3 2}
.small{fill:#5b6475;font-size:11px}.end{text-anchor:end}
.legend .k{display:inline-block;width:12px;height:10px;margin:0 4px 0 12px;vertical-align:middle}
.legend .k.now{background:#cf222e}.legend .k.renew{background:#1f883d}.legend .k.used{background:#8fb3e6}
#issuance{background:#fff;border:1px solid #dfe3ea}.ok{fill:#1f883d}.err{fill:#cf222e}
table{border-collapse:collapse;margin-top:8px}td,th{border:1px solid #dfe3ea;padding:2px 8px;text-align:left}
</style></head>
<body>
<h1>meshvault CA server ${ready}</h1>
<p class="meta">authority <b id="authority">${esc(o.authority)}</b> · trust domain <b>${esc(o.trustDomain)}</b>${o.vault ? ` · Vault ${esc(o.vault.address)}` : ""} · ${esc(o.now.slice(0, 19).replace("T", " "))} UTC · <a href="/overview">JSON</a> · <a href="/metrics">metrics</a></p>
<h2>Trust chain</h2>
${rows.length ? chainDiagram(rows, now) : "<p>no certificates yet</p>"}
<h2>Expiry timeline</h2>
${rows.length ? timeline(rows, now) : ""}
<h2>Issuance</h2>
${issuance(o)}
</body></html>
`;
}
