// Turns what Node, OpenSSL and grpc-js say about a failed connection or TLS handshake into
// one of a few causes an operator can act on. OpenSSL's own text carries source paths and
// hex codes ("...:error:0A00010B:SSL routines:...:ssl3_record.c:350:"): never shown.

export type TlsFailureKind =
  | "nothing-listening"
  | "unresolvable"
  | "timeout"
  | "untrusted"
  | "expired"
  | "name-mismatch"
  | "wrong-protocol"
  | "no-client-certificate"
  | "client-certificate-refused"
  | "reset"
  | "other";

export interface TlsFailure {
  kind: TlsFailureKind;
  /** The cause in words, without OpenSSL's codes and paths. */
  reason: string;
}

/** "80ACBF...:error:0A00010B:SSL routines:ssl3_get_record:wrong version number:../deps/...c:350:" -> "wrong version number". */
export function stripOpenSslNoise(text: string): string {
  return text
    .replace(/[0-9A-F]{8,}:error:[0-9A-F]+:[^:]*:[^:]*:([^:\n]+):[^\s:]+\.c:\d+:?/g, "$1")
    .replace(/\s*\n\s*/g, " ")
    .trim();
}

const RULES: [RegExp, TlsFailureKind, string][] = [
  [/ECONNREFUSED/, "nothing-listening", "nothing is listening there (connection refused)"],
  [/ENOTFOUND|EAI_AGAIN|Name resolution failed/i, "unresolvable", "the host name does not resolve"],
  [
    /ETIMEDOUT|DEADLINE_EXCEEDED|Deadline exceeded|timed out/i,
    "timeout",
    "no answer in time (a firewall, a wrong port, or an overloaded server)",
  ],
  [/certificate has expired|CERT_HAS_EXPIRED/i, "expired", "its certificate has expired"],
  [
    /ERR_TLS_CERT_ALTNAME_INVALID|does not match certificate's altnames|IP: \S+ is not in the cert's list/i,
    "name-mismatch",
    "its certificate is not for the name we verified",
  ],
  [
    /unable to get local issuer certificate|self[- ]signed certificate|unable to verify the first certificate|certificate signature failure|UNABLE_TO_VERIFY_LEAF_SIGNATURE|unable to get issuer certificate|UNABLE_TO_GET_ISSUER_CERT|SELF_SIGNED_CERT_IN_CHAIN|DEPTH_ZERO_SELF_SIGNED_CERT|CERT_SIGNATURE_FAILURE/i,
    "untrusted",
    "its certificate does not chain to the roots we trust",
  ],
  [
    /wrong version number|packet length too long|http request|unknown protocol|record layer failure|WRONG_VERSION_NUMBER|Protocol error/i,
    "wrong-protocol",
    "it does not speak TLS there (plain HTTP or plaintext gRPC?)",
  ],
  [
    /peer did not return a certificate|PEER_DID_NOT_RETURN_A_CERTIFICATE|certificate required/i,
    "no-client-certificate",
    "the client sent no certificate",
  ],
  [
    /alert unknown ca|alert bad certificate|alert certificate unknown|ALERT_UNKNOWN_CA|ALERT_BAD_CERTIFICATE/i,
    "client-certificate-refused",
    "the peer refused the certificate it was shown (not signed by a root it trusts)",
  ],
  [/ECONNRESET|socket hang up|EPIPE/i, "reset", "the peer closed the connection during the handshake"],
];

// The same causes seen from a TLS server refusing a client's handshake.
const SERVER_SIDE: Partial<Record<TlsFailureKind, string>> = {
  "wrong-protocol": "the client does not speak TLS (plaintext or HTTP)",
  untrusted: "the client's certificate does not chain to our trust bundle",
  expired: "the client's certificate has expired",
  "client-certificate-refused": "the client refused our certificate (it does not trust our root)",
  reset: "the client closed the connection during the handshake",
};

/**
 * Classifies an error (or its message) from a TLS / gRPC connection attempt; `side` "server"
 * words it for a server refusing a client's handshake.
 */
export function classifyTlsFailure(err: unknown, side: "client" | "server" = "client"): TlsFailure {
  const e = err as { code?: unknown; message?: unknown; details?: unknown } | undefined;
  const text = [e?.code, e?.details, e?.message, typeof err === "string" ? err : undefined]
    .filter((x) => typeof x === "string")
    .join(" ");
  for (const [re, kind, reason] of RULES)
    if (re.test(text)) return { kind, reason: (side === "server" && SERVER_SIDE[kind]) || reason };
  return { kind: "other", reason: stripOpenSslNoise(text) || "unknown error" };
}
