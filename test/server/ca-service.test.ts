// createCertificate's policy as a table, with a fake Authority that records what it was
// asked (the shape of istio-csr's pkg/server/server_test.go). The gRPC suites and the
// real-backend suites exercise the same function end to end; this one covers every branch
// without a transport.
import { test } from "node:test";
import assert from "node:assert/strict";
import {
  AuthorityDeniedError,
  AuthorityUnavailableError,
  type Authority,
  type IssuedChain,
  type Readiness,
  type SignRequest,
} from "../../src/authority/authority.js";
import {
  AuthenticationError,
  AuthenticatorUnavailableError,
  type AuthenticatedCaller,
  type CallerCredentials,
} from "../../src/identity/authenticator.js";
import { buildCsr, verifyCsr, type CsrTemplate } from "../../src/pki/csr.js";
import { decodePem, encodePem } from "../../src/pki/pem.js";
import { generateKeyPairFor } from "../../src/pki/keys.js";
import { workloadId, type SpiffeId } from "../../src/pki/spiffe.js";
import {
  CaServiceError,
  Code,
  createCertificate,
  type CaPolicy,
  type CertificateRequest,
  type CodeValue,
  type IssueStage,
} from "../../src/server/ca-service.js";

const TD = "cluster.local";
const SLEEP = workloadId(TD, "default", "sleep");
const ZTUNNEL = workloadId(TD, "istio-system", "ztunnel");
const KEY = generateKeyPairFor("ec-p256").privateKey;
const csr = (t: CsrTemplate = { uris: [SLEEP.uri] }): string => buildCsr(KEY, t);

/** A CSR for SLEEP whose structure is fine but whose signature does not verify. */
const badSignature = (): string => {
  const der = decodePem(csr())[0]!.der;
  der[der.length - 1]! ^= 1;
  return encodePem("CERTIFICATE REQUEST", der);
};

const CHAIN: IssuedChain = {
  leafPem: "LEAF\n",
  intermediatesPem: ["INTER\n"],
  rootsPem: ["ROOT1\n", "ROOT2\n"],
};

/** An Authority whose readiness and signing outcome the case decides; it records each sign call. */
class FakeAuthority implements Authority {
  readonly kind = "fake";
  readonly calls: { request: SignRequest; identity: SpiffeId }[] = [];
  constructor(
    private readonly readiness: Readiness = { ready: true },
    private readonly outcome: Error | IssuedChain = CHAIN,
  ) {}
  async start(): Promise<void> {}
  async sign(request: SignRequest, identity: SpiffeId): Promise<IssuedChain> {
    // What every authority does first: the CSR's proof of possession (SignRequest.csr).
    verifyCsr(request.csr);
    this.calls.push({ request, identity });
    if (this.outcome instanceof Error) throw this.outcome;
    return this.outcome;
  }
  trustBundle(): string[] {
    return CHAIN.rootsPem;
  }
  ready(): Readiness {
    return this.readiness;
  }
  async close(): Promise<void> {}
}

const caller = (id: SpiffeId, ns: string, sa: string): AuthenticatedCaller => ({
  identity: id,
  method: "test",
  namespace: ns,
  serviceAccount: sa,
});

const POLICY: CaPolicy = {
  trustDomain: TD,
  defaultTtlSeconds: 86400,
  maxTtlSeconds: 7 * 86400,
  allowCommonName: false,
  trustedNodeAccounts: new Set(["istio-system/ztunnel"]),
};

interface Case {
  name: string;
  request?: Partial<CertificateRequest>;
  creds?: CallerCredentials;
  /** The authenticator's answer: a caller, or an error to throw. */
  authn?: AuthenticatedCaller | Error;
  readiness?: Readiness;
  signs?: Error | IssuedChain;
  policy?: Partial<CaPolicy>;
  /** Expected failure. */
  code?: CodeValue;
  stage?: IssueStage;
  message?: RegExp;
  /** Expected success: what the authority was asked. */
  identity?: SpiffeId;
  ttlSeconds?: number;
  check?: (req: SignRequest) => void;
}

const cases: Case[] = [
  { name: "own identity: signed for the caller with the default TTL", identity: SLEEP, ttlSeconds: 86400 },
  { name: "a CSR without URI SAN gets the caller's identity", request: { csr: csr({}) }, identity: SLEEP },
  { name: "requested TTL within the maximum is kept", request: { validityDuration: 3600 }, ttlSeconds: 3600 },
  {
    name: "requested TTL above the maximum is refused",
    request: { validityDuration: 30 * 86400 },
    code: Code.INVALID_ARGUMENT,
    stage: "ttl",
    message: /exceeds the maximum 7d/,
  },
  {
    name: "authority not ready: UNAVAILABLE before authentication",
    readiness: { ready: false, reason: "no intermediate from Vault yet" },
    authn: new AuthenticationError("must not be reached"),
    code: Code.UNAVAILABLE,
    stage: "not-ready",
    message: /\(fake\) is not ready: no intermediate from Vault yet/,
  },
  {
    name: "bad credentials: UNAUTHENTICATED",
    authn: new AuthenticationError("token expired"),
    code: Code.UNAUTHENTICATED,
    stage: "authn",
    message: /token expired/,
  },
  {
    name: "authenticator backend down: UNAVAILABLE",
    authn: new AuthenticatorUnavailableError("JWKS unreachable"),
    code: Code.UNAVAILABLE,
    stage: "authn",
    message: /cannot authenticate right now: JWKS unreachable/,
  },
  {
    name: "CSR for another identity",
    request: { csr: csr({ uris: [workloadId(TD, "default", "httpbin").uri] }) },
    code: Code.INVALID_ARGUMENT,
    stage: "csr",
    message:
      /asks for identity spiffe:\/\/cluster.local\/ns\/default\/sa\/httpbin but the caller authenticated as/,
  },
  {
    name: "CSR with a DNS SAN",
    request: { csr: csr({ uris: [SLEEP.uri], dnsNames: ["evil.example"] }) },
    code: Code.INVALID_ARGUMENT,
    stage: "csr",
    message: /DNS:evil.example/,
  },
  {
    name: "CSR asking for a CA",
    request: { csr: csr({ uris: [SLEEP.uri], ca: true }) },
    code: Code.INVALID_ARGUMENT,
    stage: "csr",
    message: /basicConstraints CA:true/,
  },
  {
    name: "not a CSR",
    request: { csr: "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n" },
    code: Code.INVALID_ARGUMENT,
    stage: "csr-parse",
  },
  {
    name: "CSR whose signature does not verify (checked where it is signed)",
    request: { csr: badSignature() },
    code: Code.INVALID_ARGUMENT,
    stage: "csr-parse",
    message: /CSR signature does not verify/,
  },
  {
    name: "impersonation by a workload that is not a trusted node account",
    request: { metadata: { ImpersonatedIdentity: workloadId(TD, "default", "httpbin").uri } },
    code: Code.PERMISSION_DENIED,
    stage: "authn",
    message: /list "default\/sleep" in authentication.trustedNodeAccounts/,
  },
  {
    name: "impersonation by a trusted node agent (ztunnel): signed for the impersonated identity",
    authn: caller(ZTUNNEL, "istio-system", "ztunnel"),
    request: { metadata: { ImpersonatedIdentity: SLEEP.uri } },
    identity: SLEEP,
  },
  {
    name: "impersonation into another trust domain",
    authn: caller(ZTUNNEL, "istio-system", "ztunnel"),
    request: {
      csr: csr({}),
      metadata: { ImpersonatedIdentity: "spiffe://other.example/ns/default/sa/sleep" },
    },
    code: Code.PERMISSION_DENIED,
    stage: "authn",
    message: /trust domain other.example/,
  },
  {
    name: "authority unavailable while signing: UNAVAILABLE, counted as not-ready",
    signs: new AuthorityUnavailableError("Vault sealed"),
    code: Code.UNAVAILABLE,
    stage: "not-ready",
    message: /Vault sealed/,
  },
  {
    name: "authority refuses: PERMISSION_DENIED",
    signs: new AuthorityDeniedError("role does not allow this URI"),
    code: Code.PERMISSION_DENIED,
    stage: "sign",
    message: /role does not allow this URI/,
  },
  {
    name: "authority fails otherwise: INTERNAL",
    signs: new Error("disk on fire"),
    code: Code.INTERNAL,
    stage: "sign",
    message: /signing failed: disk on fire/,
  },
  {
    name: "the bearer token is handed to the authority (vault-sign identity: workload)",
    creds: { authorization: "Bearer abc.def.ghi", peerCertificates: [] },
    check: (r) => assert.equal(r.callerToken, "abc.def.ghi"),
  },
  {
    name: "the CSR's common name is dropped unless allowed",
    request: { csr: csr({ subject: { commonName: "sleep" }, uris: [SLEEP.uri] }) },
    check: (r) => assert.equal(r.commonName, undefined),
  },
  {
    name: "the CSR's common name is kept when allowed",
    policy: { allowCommonName: true },
    request: { csr: csr({ subject: { commonName: "sleep" }, uris: [SLEEP.uri] }) },
    check: (r) => assert.equal(r.commonName, "sleep"),
  },
];

for (const c of cases) {
  test(`createCertificate: ${c.name}`, async () => {
    const authority = new FakeAuthority(c.readiness, c.signs);
    const authn = c.authn ?? caller(SLEEP, "default", "sleep");
    const deps = {
      authority,
      authenticate: async (): Promise<AuthenticatedCaller> => {
        if (authn instanceof Error) throw authn;
        return authn;
      },
      policy: { ...POLICY, ...c.policy },
    };
    const req: CertificateRequest = { csr: csr(), validityDuration: 0, ...c.request };
    const run = createCertificate(deps, req, c.creds ?? { peerCertificates: [] });
    if (c.code !== undefined) {
      await assert.rejects(run, (err: unknown) => {
        assert.ok(err instanceof CaServiceError, String(err));
        assert.equal(err.code, c.code);
        if (c.stage) assert.equal(err.stage, c.stage);
        if (c.message) assert.match(err.message, c.message);
        return true;
      });
      if (c.signs === undefined) assert.equal(authority.calls.length, 0, "refused before signing");
      return;
    }
    const r = await run;
    assert.deepEqual(
      r.chain,
      ["LEAF\n", "INTER\n", "ROOT1\nROOT2\n"],
      "leaf, intermediates, then the root bundle",
    );
    assert.equal(authority.calls.length, 1);
    const call = authority.calls[0]!;
    assert.equal(call.identity.uri, (c.identity ?? SLEEP).uri);
    assert.equal(r.identity.uri, call.identity.uri);
    if (c.ttlSeconds !== undefined) assert.equal(call.request.ttlSeconds, c.ttlSeconds);
    c.check?.(call.request);
  });
}
