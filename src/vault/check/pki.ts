// PKI and KV state for each mode: is the CA there, valid, chained; does the
// role sign what it should and refuse what it should not; does the KV secret
// hold a usable CA pair.

import { X509Certificate, createPrivateKey, createPublicKey } from "node:crypto";
import { formatDuration } from "../../config/duration.js";
import { buildCsr } from "../../pki/csr.js";
import { generateKeyPairFor } from "../../pki/keys.js";
import type { VaultClient } from "../client.js";
import { VaultError } from "../errors.js";
import { readKvField } from "../kv.js";
import type { VaultAuthorityConfig } from "../setup/access.js";
import type { CheckReport } from "./report.js";

function certsIn(pem: string): X509Certificate[] {
  return (pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? []).map(
    (p) => new X509Certificate(p),
  );
}

function secondsLeft(c: X509Certificate): number {
  return Math.floor((Date.parse(c.validTo) - Date.now()) / 1000);
}

function subject(c: X509Certificate): string {
  return c.subject.replace(/\n/g, ", ") || "(empty subject)";
}

/** The CA at `<mount>/ca/pem` exists and is in its validity period. */
async function checkCa(
  client: VaultClient,
  mount: string,
  what: string,
  setupHint: string,
  r: CheckReport,
  signal: AbortSignal | undefined,
): Promise<X509Certificate | undefined> {
  let raw;
  try {
    raw = await client.requestRaw("GET", `${mount}/ca/pem`, undefined, {
      noAuth: true,
      acceptStatus: [204, 400, 404],
      signal,
    });
  } catch (e) {
    r.fail(`cannot read ${mount}/ca/pem (${(e as Error).message})`, "check Vault's logs");
    return undefined;
  }
  if (raw.status === 404) {
    r.fail(`no secrets engine is mounted at ${mount}/`, setupHint);
    return undefined;
  }
  if (raw.status !== 200 || !raw.body.includes("BEGIN CERTIFICATE")) {
    r.fail(`${what} at ${mount}/ has no CA certificate yet`, setupHint);
    return undefined;
  }
  const c = new X509Certificate(raw.body);
  const left = secondsLeft(c);
  if (left <= 0) {
    r.fail(`${what} at ${mount}/ (${subject(c)}) expired at ${c.validTo}`, `issue a new one: ${setupHint}`);
    return undefined;
  }
  r.ok(
    `${what} at ${mount}/: ${subject(c)}, ${formatDuration(left)} left (until ${new Date(c.validTo).toISOString()})`,
  );
  return c;
}

/** `<mount>/ca_chain` ends at a self-signed root and each certificate is signed by the next. */
async function checkChain(
  client: VaultClient,
  mount: string,
  r: CheckReport,
  signal: AbortSignal | undefined,
): Promise<void> {
  const raw = await client.requestRaw("GET", `${mount}/ca_chain`, undefined, {
    noAuth: true,
    acceptStatus: [204, 400],
    signal,
  });
  const chain = raw.status === 200 ? certsIn(raw.body) : [];
  if (chain.length === 0) {
    r.fail(
      `${mount}/ca_chain is empty`,
      `set the chain: vault write ${mount}/intermediate/set-signed certificate=@<intermediate + root PEM>`,
    );
    return;
  }
  for (let i = 0; i + 1 < chain.length; i++) {
    if (!chain[i]!.verify(chain[i + 1]!.publicKey)) {
      r.fail(
        `${mount}/ca_chain: ${subject(chain[i]!)} is not signed by the next certificate, ${subject(chain[i + 1]!)}`,
        `re-import the intermediate with its issuer chain (${mount}/intermediate/set-signed)`,
      );
      return;
    }
  }
  const top = chain[chain.length - 1]!;
  if (!top.verify(top.publicKey)) {
    r.fail(
      `${mount}/ca_chain stops at ${subject(top)}, which is not a self-signed root`,
      `include the root in the chain given to ${mount}/intermediate/set-signed`,
    );
    return;
  }
  r.ok(`${mount}/ca_chain: ${chain.length} certificate(s) up to the root ${subject(top)}`);
}

/** Sign a throwaway CSR like the server does, and try one outside the trust domain, which Vault must refuse. */
async function checkSigning(
  client: VaultClient,
  token: string,
  mount: string,
  role: string,
  td: string,
  setupHint: string,
  r: CheckReport,
  signal: AbortSignal | undefined,
): Promise<void> {
  const path = `${mount}/sign/${role}`;
  const { privateKey } = generateKeyPairFor("ec-p256");
  const id = `spiffe://${td}/ns/meshvault-check/sa/meshvault-check`;
  const csr = buildCsr(privateKey, { uris: [id] });
  try {
    const res = await client.write<{ certificate?: string }>(
      path,
      { csr, uri_sans: id, ttl: "60s", exclude_cn_from_sans: true },
      { token, maxAttempts: 1, signal },
    );
    const cert = res?.data?.certificate ? new X509Certificate(res.data.certificate) : undefined;
    if (!cert?.subjectAltName?.includes(`URI:${id}`)) {
      r.fail(`${path} answered without a certificate carrying ${id}`, `check role ${role}: ${setupHint}`);
      return;
    }
    r.ok(`test signature at ${path}: issued a 60s certificate for ${id}`);
  } catch (e) {
    r.fail(`test signature at ${path} failed: ${(e as Error).message}`, setupHint);
    return;
  }
  const outside = `spiffe://not-${td}/ns/x/sa/y`;
  try {
    await client.write(path, { csr, uri_sans: outside, ttl: "60s" }, { token, maxAttempts: 1, signal });
    r.fail(
      `role ${role} at ${mount}/ signed ${outside}, outside the trust domain ${td}`,
      `vault write ${mount}/roles/${role} allowed_uri_sans='spiffe://${td}/*' ... (or re-run ${setupHint})`,
    );
  } catch (e) {
    if (e instanceof VaultError && e.status === 400)
      r.ok(`role ${role} refuses URIs outside spiffe://${td}/*`);
    else
      r.fail(
        `could not test that role ${role} refuses foreign URIs: ${(e as Error).message}`,
        "check Vault's logs",
      );
  }
}

async function checkKv(
  client: VaultClient,
  token: string,
  a: Extract<VaultAuthorityConfig, { type: "vault-kv" }>,
  setupHint: string,
  r: CheckReport,
  signal: AbortSignal | undefined,
): Promise<void> {
  const read = async (ref: string): Promise<string | undefined> => {
    try {
      return (await readKvField(client, ref, { token, signal })).value;
    } catch (e) {
      r.fail(`${ref}: ${(e as Error).message}`, setupHint);
      return undefined;
    }
  };
  const certPem = await read(a.certificate);
  const keyPem = await read(a.privateKey);
  if (certPem === undefined || keyPem === undefined) return;
  let cert: X509Certificate;
  try {
    cert = new X509Certificate(certPem);
  } catch (e) {
    r.fail(`${a.certificate} is not a PEM certificate (${(e as Error).message})`, setupHint);
    return;
  }
  try {
    const pub = createPublicKey(createPrivateKey(keyPem)).export({ type: "spki", format: "der" });
    if (!pub.equals(cert.publicKey.export({ type: "spki", format: "der" }))) {
      r.fail(
        `${a.privateKey} does not belong to the certificate ${subject(cert)}`,
        `write the matching pair: ${setupHint}`,
      );
      return;
    }
  } catch (e) {
    r.fail(`${a.privateKey} is not a PEM private key (${(e as Error).message})`, setupHint);
    return;
  }
  if (!cert.ca) {
    r.fail(
      `${a.certificate} (${subject(cert)}) is not a CA certificate`,
      `store a CA certificate: ${setupHint}`,
    );
    return;
  }
  const left = secondsLeft(cert);
  if (left <= 0) {
    r.fail(`${a.certificate} (${subject(cert)}) expired at ${cert.validTo}`, `store a new CA: ${setupHint}`);
    return;
  }
  r.ok(`KV CA pair ${a.certificate}: ${subject(cert)}, key matches, ${formatDuration(left)} left`);
  const extra = [...(a.chain ? [await read(a.chain)] : []), ...(a.root ? [await read(a.root)] : [])];
  if (extra.some((x) => x === undefined)) return;
  if (extra.length) {
    const pool = extra.flatMap((p) => certsIn(p!));
    let cur = cert;
    for (let i = 0; i <= pool.length && !cur.verify(cur.publicKey); i++) {
      const next = pool.find((c) => cur.checkIssued(c) && cur.verify(c.publicKey));
      if (!next) {
        r.fail(
          `the chain/root in KV does not contain the issuer of ${subject(cur)}`,
          `store the full chain up to the root: ${setupHint}`,
        );
        return;
      }
      cur = next;
    }
    r.ok(`KV chain: ${subject(cert)} chains to the root ${subject(cur)}`);
  }
}

export async function checkPkiState(
  client: VaultClient,
  token: string,
  a: VaultAuthorityConfig,
  trustDomain: string,
  setupHint: string,
  r: CheckReport,
  /** Paths the capability check already reported as lacking: not tried again. */
  lacking: ReadonlySet<string> = new Set(),
  /** Cancels the request in flight (see runCheck). */
  signal?: AbortSignal,
): Promise<void> {
  switch (a.type) {
    case "vault-sign": {
      const ca = await checkCa(client, a.mount, "signing CA", setupHint, r, signal);
      if (!ca) return;
      await checkChain(client, a.mount, r, signal);
      if (a.identity === "server" && lacking.has(`${a.mount}/sign/${a.role}`)) {
        r.fail(`no test signature: the token may not call ${a.mount}/sign/${a.role} (see above)`, setupHint);
      } else if (a.identity === "server")
        await checkSigning(client, token, a.mount, a.role, trustDomain, setupHint, r, signal);
      else
        r.ok(
          `identity: workload: each workload's own Vault login (role ${a.workloadAuth?.role} at auth/${a.workloadAuth?.mount}) signs; no test signature from here`,
        );
      return;
    }
    case "vault-intermediate": {
      const root = await checkCa(client, a.rootMount, "root CA", setupHint, r, signal);
      if (root && secondsLeft(root) < a.ttl) {
        r.ok(
          `note: the root expires in ${formatDuration(secondsLeft(root))}, sooner than the intermediate ttl ${formatDuration(a.ttl)}; Vault will cut intermediates to the root's expiry`,
        );
      }
      if (a.mode === "exported") {
        const raw = await client.requestRaw("GET", `${a.intermediateMount}/ca/pem`, undefined, {
          noAuth: true,
          acceptStatus: [204, 400, 404],
          signal,
        });
        if (raw.status === 404)
          r.fail(
            `no PKI secrets engine at ${a.intermediateMount}/ (mode exported generates the intermediate there)`,
            setupHint,
          );
        else
          r.ok(
            `PKI secrets engine at ${a.intermediateMount}/ present${raw.status === 200 ? " (holds an intermediate)" : " (empty: meshvault fills it at startup)"}`,
          );
      }
      return;
    }
    case "vault-kv":
      await checkKv(client, token, a, setupHint, r, signal);
      return;
  }
}
