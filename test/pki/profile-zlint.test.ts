// The certificate profile, judged by zlint (the linter public CAs run before issuing): every
// root, intermediate and leaf our signers issue has no RFC error or warning. The web-PKI rules
// (CA/Browser Forum, browsers) that a SPIFFE mesh deliberately does not follow are named
// below, each with its reason; any other finding fails the test.
//
// Authorities: local, files, vault-kv and vault-intermediate all sign leaves through the same
// signLeaf (src/authority/ca-material.ts), so the local authority's leaves stand for all four;
// vault-sign's leaves are made by Vault itself (test/vault/workload-policy.test.ts).
import "reflect-metadata";
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as x509 from "@peculiar/x509";
import { LocalAuthority } from "../../src/authority/local.js";
import { LocalIntermediateSource } from "../../src/kube/intermediate-source.js";
import { buildCsr, parseCsr } from "../../src/pki/csr.js";
import { generateKeyPairFor, type KeyAlgorithm } from "../../src/pki/keys.js";
import { workloadId } from "../../src/pki/spiffe.js";
import { zlint, type LintFinding } from "../helpers/zlint.js";

/** zlint sources that are IETF RFCs (zlint has no RFC 8410 source: checked by the oracle below). */
const RFC_SOURCES = "RFC5280,RFC8813,RFC3279,RFC5480,RFC5891";

/** Web-PKI lints a SPIFFE mesh certificate fails on purpose. */
const SPIFFE_EXCEPTIONS: Record<string, string> = {
  e_ext_san_uniform_resource_identifier_present:
    "CABF BR forbids URI SANs; a SPIFFE X.509-SVID's identity IS its one URI SAN (spiffe://td/ns/x/sa/y), on leaves and, as the trust-domain ID, on CAs",
  e_sub_cert_aia_missing:
    "no AIA: mesh peers get the chain in the handshake and the trust bundle out of band; there is no public issuer URL",
  w_sub_cert_aia_does_not_contain_issuing_ca_url: "no AIA (as above)",
  w_sub_ca_aia_missing: "no AIA on intermediates (as above)",
  e_sub_cert_certificate_policies_missing: "no web-PKI certificate policy OID: the mesh is its own PKI",
  e_sub_cert_cert_policy_empty: "no certificate policy (as above)",
  e_sub_ca_certificate_policies_missing: "no certificate policy on intermediates (as above)",
  e_invalid_ca_certificate_policies: "no certificate policy on intermediates (as above)",
  e_sub_ca_crl_distribution_points_missing:
    "no CRLs: mesh leaves live hours to days and revocation is rotation",
  e_ca_country_name_missing: "CA subjects are O + CN only; a mesh CA has no country",
  w_ext_subject_key_identifier_not_recommended_subscriber:
    "CABF discourages SKI on leaves; RFC 5280 4.2.1.2 says SHOULD, and we follow the RFC",
  e_subject_common_name_not_exactly_from_san:
    "CABF wants the CN copied from a DNS SAN; an SVID's CN (only with allowCommonName) is a free label, its identity is the URI SAN",
  e_subject_common_name_not_from_san: "CN is a label, not a DNS SAN (as above)",
  e_dnsname_not_valid_tld:
    "serving certificates name cluster-internal hosts (istiod.istio-system.svc, localhost), not public DNS; workload CNs are labels",
  e_ext_san_contains_reserved_ip: "serving certificates may name loopback (127.0.0.1, ::1) for local clients",
  w_subject_common_name_included: "a CN appears only when the operator sets allowCommonName (Istio's option)",
  e_algorithm_identifier_improper_encoding:
    "Mozilla's root policy has no Ed25519 keys; RFC 8410 defines them and workloads may use them",
  e_signature_algorithm_not_supported:
    "likewise for Ed25519 signatures, when the operator chooses an Ed25519 CA (authority.keyAlgorithm)",
};

interface Issued {
  what: string;
  pem: string;
}

async function issueEverything(caAlg: KeyAlgorithm, dir: string): Promise<Issued[]> {
  const out: Issued[] = [];
  const authority = new LocalAuthority({ dataDir: dir, trustDomain: "cluster.local", keyAlgorithm: caAlg });
  await authority.start();
  try {
    const id = workloadId("cluster.local", "default", "sleep");
    for (const leafAlg of ["rsa-2048", "ec-p256", "ec-p384", "ed25519"] as const) {
      const csr = parseCsr(buildCsr(generateKeyPairFor(leafAlg).privateKey, { uris: [id.uri] }));
      const chain = await authority.sign({ csr, ttlSeconds: 3600 }, id);
      out.push({ what: `${caAlg} CA: ${leafAlg} workload leaf`, pem: chain.leafPem });
      if (leafAlg === "ec-p256") {
        out.push({ what: `${caAlg} CA: root`, pem: chain.rootsPem[0]! });
        out.push({ what: `${caAlg} CA: intermediate`, pem: chain.intermediatesPem[0]! });
        const serving = await authority.sign(
          {
            csr,
            ttlSeconds: 3600,
            dnsNames: ["istiod.istio-system.svc", "localhost"],
            ipAddresses: ["127.0.0.1", "::1"],
          },
          workloadId("cluster.local", "istio-system", "meshvault"),
        );
        out.push({ what: `${caAlg} CA: serving certificate (DNS + IP SANs)`, pem: serving.leafPem });
        const withCn = await authority.sign({ csr, ttlSeconds: 3600, commonName: "sleep.default" }, id);
        out.push({ what: `${caAlg} CA: leaf with a CN (allowCommonName)`, pem: withCn.leafPem });
      }
    }
  } finally {
    await authority.close();
  }
  const istiod = await new LocalIntermediateSource({
    dataDir: dir,
    trustDomain: "cluster.local",
    ttlSeconds: 86400,
    keyAlgorithm: caAlg,
  }).issueIntermediate();
  out.push({ what: `${caAlg} CA: istiod intermediate (cacerts)`, pem: istiod.caCertPem });
  return out;
}

const format = (what: string, f: LintFinding[]): string =>
  `${what}:\n${f.map((x) => `  ${x.result} ${x.lint}${x.details ? ` (${x.details})` : ""}`).join("\n")}`;

for (const caAlg of ["ec-p256", "ec-p384", "rsa-2048", "ed25519"] as const) {
  test(`zlint: every certificate a ${caAlg} local CA issues has no RFC 5280/8813/3279/5480 error or warning`, async () => {
    const dir = mkdtempSync(join(tmpdir(), "meshvault-zlint-"));
    try {
      const issued = await issueEverything(caAlg, dir);
      const rfc = await zlint(
        issued.map((i) => i.pem),
        ["-includeSources", RFC_SOURCES],
      );
      const bad = issued.map((i, n) => (rfc[n]!.length ? format(i.what, rfc[n]!) : "")).filter(Boolean);
      assert.deepEqual(bad, [], `RFC findings:\n${bad.join("\n")}`);

      // Every lint, every source: only the named SPIFFE exceptions may fire.
      const all = await zlint(issued.map((i) => i.pem));
      const unexpected = issued
        .map((i, n) => {
          const f = all[n]!.filter((x) => !(x.lint in SPIFFE_EXCEPTIONS));
          return f.length ? format(i.what, f) : "";
        })
        .filter(Boolean);
      assert.deepEqual(
        unexpected,
        [],
        `findings that are not a named SPIFFE exception:\n${unexpected.join("\n")}`,
      );

      // RFC 8813 / RFC 8410 key usage, read back by @peculiar/x509 (zlint has no RFC 8410 lints).
      for (const i of issued.filter((x) => x.what.includes("workload leaf"))) {
        const cert = new x509.X509Certificate(i.pem);
        const ku = cert.getExtension(x509.KeyUsagesExtension)!;
        const F = x509.KeyUsageFlags;
        const expected = i.what.includes("rsa-2048 workload")
          ? F.digitalSignature | F.keyEncipherment
          : F.digitalSignature;
        assert.equal(ku.usages, expected, `${i.what}: key usage`);
        assert.equal(ku.critical, true);
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
}
