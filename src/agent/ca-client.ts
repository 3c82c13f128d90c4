// Client for Istio's CA API (istio.v1.auth.IstioCertificateService) over TLS,
// as istio-agent calls it: Bearer token, optional clusterid and extra headers,
// the server verified against a root file, optionally with the workload's
// current certificate as client certificate (renewal without a token).
import { promises as fs } from "node:fs";
import { isIP } from "node:net";
import * as grpc from "@grpc/grpc-js";
import { classifyTlsFailure, stripOpenSslNoise } from "../net/tls-failure.js";
import { parseCertificates } from "../pki/certificate.js";
import { formatName } from "../pki/name.js";
import {
  caServiceDefinition,
  plainToStruct,
  type CaCertificateRequest,
  type CaCertificateResponse,
} from "./ca-proto.js";
import { fsReason } from "../fs/errors.js";

export interface CaClientOptions {
  /** `host:port` of the CA (istio-agent's CA_ADDR), e.g. `localhost:15012`. */
  address: string;
  /** PEM file with the roots that sign the CA's serving certificate (istio-agent's root-cert.pem). */
  rootCertFile: string;
  /** Those roots as PEM text instead of reading `rootCertFile` (e.g. fetched from the CA's /roots). */
  rootsPem?: string;
  /** TLS server name to verify instead of the address's host, e.g. `istiod.istio-system.svc`. */
  serverName?: string;
  /** Sent as the `clusterid` header (ISTIO_META_CLUSTER_ID). */
  clusterId?: string;
  /** Extra headers (istio-agent's CA_HEADER_<NAME>). */
  headers?: Record<string, string>;
  /** Per-call deadline. Default 10 s. */
  timeoutMs?: number;
  /**
   * Share one HTTP/2 connection among clients created with the same options (a node agent's
   * identities). Default true.
   */
  shareChannel?: boolean;
}

export interface CreateCertificateCall {
  csrPem: string;
  validitySeconds: number;
  /** Bearer token; omitted when undefined. */
  token?: string;
  /** Current certificate and key, presented as the TLS client certificate. */
  clientCert?: { certChainPem: string; privateKeyPem: string };
  /** Extra metadata Struct fields (e.g. CertSigner). */
  metadata?: Record<string, string>;
}

export class CaCallError extends Error {
  override name = "CaCallError";
  constructor(
    message: string,
    /** gRPC status code, when the call reached the server. */
    readonly code?: number,
  ) {
    super(message);
  }
}

type RawClient = grpc.Client & {
  CreateCertificate(
    req: CaCertificateRequest,
    md: grpc.Metadata,
    opts: grpc.CallOptions,
    cb: (err: grpc.ServiceError | null, res?: CaCertificateResponse) => void,
  ): grpc.ClientUnaryCall;
};

export interface CaClient {
  /** The chain as returned: leaf first, intermediates, then the root bundle as the last element. */
  createCertificate(call: CreateCertificateCall): Promise<string[]>;
  close(): void;
}

function channelOptions(o: CaClientOptions): grpc.ChannelOptions {
  const opts: grpc.ChannelOptions = {
    "grpc.max_receive_message_length": 1024 * 1024,
    "grpc.initial_reconnect_backoff_ms": 200,
    "grpc.max_reconnect_backoff_ms": 5000,
  };
  if (o.serverName) {
    opts["grpc.ssl_target_name_override"] = o.serverName;
    opts["grpc.default_authority"] = o.serverName;
  }
  return opts;
}

const STATUS_NAMES = Object.fromEntries(
  Object.entries(grpc.status)
    .filter(([, v]) => typeof v === "number")
    .map(([k, v]) => [v, k]),
) as Record<number, string>;

/** "CN=meshvault root CA (cluster.local)" for each root in the file, for trust-failure messages. */
function rootNames(rootsPem: string): string {
  try {
    return parseCertificates(rootsPem)
      .map((c) => formatName(c.subject) || `serial ${c.serialHex}`)
      .join("; ");
  } catch {
    return "no parsable certificate";
  }
}

/** Hints that turn a gRPC failure into something an operator can act on. */
function explain(err: grpc.ServiceError, o: CaClientOptions, rootsPem: string): string {
  const name = STATUS_NAMES[err.code] ?? String(err.code);
  const ca = `CA ${o.address}`;
  if (err.code === grpc.status.UNAVAILABLE || err.code === grpc.status.DEADLINE_EXCEEDED) {
    const f = classifyTlsFailure(err);
    const verified = o.serverName ?? o.address.replace(/:\d+$/, "").replace(/^\[|\]$/g, "");
    switch (f.kind) {
      case "nothing-listening":
        return `${ca} unreachable: ${f.reason}; start the CA (meshvault server) or fix --ca-address`;
      case "unresolvable":
        return `${ca} unreachable: ${f.reason}; fix --ca-address`;
      case "timeout":
        return `${ca} unreachable: ${f.reason}; check --ca-address and the network path`;
      case "untrusted":
      case "expired":
        return `${ca}: TLS trust failure: ${f.reason} (roots from ${o.rootCertFile}: ${rootNames(rootsPem)}); pass --ca-root-cert with the root that signed the CA's serving certificate (a meshvault server writes it to <dataDir>/root-cert.pem and serves it at /roots)`;
      case "name-mismatch": {
        const names = /cert's altnames: (.+?)\.?(?:\s+Resolution note|$)/s
          .exec(err.details || err.message)?.[1]
          ?.split(/,\s*/)
          .filter((n) => !n.startsWith("URI:"))
          .join(", ");
        return `${ca}: server name mismatch: its certificate is not for "${verified}"${names ? ` (it names ${names})` : ""}; pass --ca-server-name with one of its names`;
      }
      case "wrong-protocol":
        return `${ca}: wrong protocol: ${f.reason}; --ca-address must name the CA's gRPC TLS port (15012 by default), not its HTTP port (15014)`;
      case "reset":
        return `${ca}: ${f.reason} (the CA may have refused our client certificate, or it is not a TLS server); check --ca-address`;
      default:
        return `${ca} answered ${name}: ${f.reason} (is the CA running and reachable at --ca-address, and does ${o.rootCertFile} hold the root that signed its certificate?)`;
    }
  }
  const base = `${ca} answered ${name}: ${stripOpenSslNoise(err.details || err.message)}`;
  if (err.code === grpc.status.UNAUTHENTICATED)
    return `${base} (check the token file's issuer and audience istio-ca, or that the client certificate chains to the CA's bundle)`;
  return base;
}

/**
 * grpc-js sends the target host as TLS SNI even when it is an IP address, which RFC 6066 forbids
 * and Node answers with a DEP0123 warning on stderr. Without --ca-server-name and with an IP
 * address, send no SNI (as Go's istio-agent does) and verify the IP against the certificate's
 * IP SANs. grpc-js offers no option for it, so the connector's TLS options are adjusted here;
 * test/cli/ca-errors.test.ts fails if a grpc-js upgrade moves them.
 */
function withoutIpSni(creds: grpc.ChannelCredentials): grpc.ChannelCredentials {
  type Connector = { connectionOptions?: { servername?: string } };
  const inner = creds as unknown as { _createSecureConnector(...a: unknown[]): Connector };
  const create = inner._createSecureConnector.bind(inner);
  inner._createSecureConnector = (...a: unknown[]) => {
    const connector = create(...a);
    const opts = connector.connectionOptions;
    if (opts?.servername && isIP(opts.servername)) delete opts.servername;
    return connector;
  };
  return creds;
}

// grpc-js lets clients share a connection only when their channel credentials compare equal,
// and it compares SSL credentials by SecureContext identity: every createSsl() call made a
// client that opened its own TLS connection (own handshake, own ~100 KB of buffers), even to
// the same CA with the same roots. One credentials object per distinct root bundle makes
// shareChannel true across clients (several agents in one process: the demo, tests, benches).
const SHARED_CREDENTIALS_MAX = 8;
const sharedCredentials = new Map<string, grpc.ChannelCredentials>();

function credentialsForRoots(rootsPem: string): grpc.ChannelCredentials {
  let creds = sharedCredentials.get(rootsPem);
  if (!creds) {
    if (sharedCredentials.size >= SHARED_CREDENTIALS_MAX)
      sharedCredentials.delete(sharedCredentials.keys().next().value!);
    creds = withoutIpSni(grpc.credentials.createSsl(Buffer.from(rootsPem)));
    sharedCredentials.set(rootsPem, creds);
  }
  return creds;
}

export async function createCaClient(o: CaClientOptions): Promise<CaClient> {
  // Hand-written codecs instead of proto-loader parsing ca.proto at start (see wire.ts).
  const Ctor = grpc.makeGenericClientConstructor(caServiceDefinition, "IstioCertificateService");
  const timeoutMs = o.timeoutMs ?? 10_000;
  let rootsPem: string;
  try {
    rootsPem = o.rootsPem ?? (await fs.readFile(o.rootCertFile, "utf8"));
  } catch (err) {
    throw new Error(
      `cannot read the CA root certificate ${o.rootCertFile}: ${fsReason(err)}; pass --ca-root-cert with the file that signs the CA's TLS certificate`,
      { cause: err },
    );
  }
  let roots = Buffer.from(rootsPem);
  const baseOptions = channelOptions(o);
  if (o.shareChannel === false) baseOptions["grpc.use_local_subchannel_pool"] = 1;
  const makeTokenClient = (): RawClient =>
    new Ctor(
      o.address,
      o.shareChannel === false
        ? withoutIpSni(grpc.credentials.createSsl(roots))
        : credentialsForRoots(rootsPem),
      baseOptions,
    ) as unknown as RawClient;
  let tokenClient = makeTokenClient();
  // One mTLS client per client certificate; replaced when the certificate changes.
  let mtls: { key: string; client: RawClient } | undefined;
  // The root file changes during a root rotation (the CA's own certificate moves to the new
  // root): re-read it when its mtime or size changes, so the CA stays reachable.
  let seen =
    o.rootsPem === undefined
      ? await fs.stat(o.rootCertFile).then(
          (st) => `${st.mtimeMs}/${st.size}`,
          () => "",
        )
      : "";
  const reloadRoots = async (): Promise<void> => {
    if (o.rootsPem !== undefined) return;
    const st = await fs.stat(o.rootCertFile).catch(() => undefined);
    const now = st ? `${st.mtimeMs}/${st.size}` : "";
    if (!st || now === seen) return;
    seen = now;
    const text = await fs.readFile(o.rootCertFile, "utf8").catch(() => "");
    if (!text.includes("-----BEGIN") || text === rootsPem) return;
    rootsPem = text;
    roots = Buffer.from(text);
    const old = tokenClient;
    tokenClient = makeTokenClient();
    old.close();
    mtls?.client.close();
    mtls = undefined;
  };

  const clientFor = (call: CreateCertificateCall): RawClient => {
    if (!call.clientCert) return tokenClient;
    const key = call.clientCert.certChainPem;
    if (mtls?.key !== key) {
      mtls?.client.close();
      const creds = withoutIpSni(
        grpc.credentials.createSsl(
          roots,
          Buffer.from(call.clientCert.privateKeyPem),
          Buffer.from(call.clientCert.certChainPem),
        ),
      );
      // A private subchannel pool: the shared one would reuse a connection made with another identity.
      mtls = {
        key,
        client: new Ctor(o.address, creds, {
          ...baseOptions,
          "grpc.use_local_subchannel_pool": 1,
        }) as unknown as RawClient,
      };
    }
    return mtls.client;
  };

  return {
    async createCertificate(call) {
      await reloadRoots();
      const md = new grpc.Metadata();
      if (call.token !== undefined) md.set("authorization", `Bearer ${call.token}`);
      if (o.clusterId) md.set("clusterid", o.clusterId);
      for (const [k, v] of Object.entries(o.headers ?? {})) md.set(k.toLowerCase(), v);
      const req: CaCertificateRequest = {
        csr: call.csrPem,
        validityDuration: call.validitySeconds,
        metadata: plainToStruct(call.metadata ?? {}),
      };
      const client = clientFor(call);
      return new Promise((resolve, reject) => {
        client.CreateCertificate(req, md, { deadline: Date.now() + timeoutMs }, (err, res) => {
          if (err) return reject(new CaCallError(explain(err, o, rootsPem), err.code));
          const chain = res?.certChain ?? [];
          if (chain.length < 2)
            return reject(
              new CaCallError(
                `CA ${o.address} returned ${chain.length} certificate(s); expected the leaf and the root bundle at least (invalid empty CertChain)`,
              ),
            );
          resolve(chain);
        });
      });
    },
    close() {
      tokenClient.close();
      mtls?.client.close();
    },
  };
}
