// A real grpc-js client for the Istio CA API, as istio-agent would call it.
import assert from "node:assert/strict";
import * as grpc from "@grpc/grpc-js";
import { istioCaClientConstructor, plainToStruct } from "../../src/server/proto.js";

export interface CaCallOptions {
  token?: string;
  validity?: number;
  metadata?: Record<string, string>;
  clusterId?: string;
}

export interface CaClient {
  create(csrPem: string, opts?: CaCallOptions): Promise<string[]>;
  close(): void;
}

export function caClient(
  address: string,
  rootsPem: string,
  tls?: { certChainPem: string; keyPem: string },
  serverName = "istiod.istio-system.svc",
): CaClient {
  const Ctor = istioCaClientConstructor();
  const creds = grpc.credentials.createSsl(
    Buffer.from(rootsPem),
    tls ? Buffer.from(tls.keyPem) : null,
    tls ? Buffer.from(tls.certChainPem) : null,
  );
  const client = new Ctor(address, creds, {
    "grpc.ssl_target_name_override": serverName,
    "grpc.default_authority": serverName,
  });
  return {
    create: (csrPem, opts = {}) =>
      new Promise((resolve, reject) => {
        const md = new grpc.Metadata();
        if (opts.token) md.set("authorization", `Bearer ${opts.token}`);
        if (opts.clusterId) md.set("clusterid", opts.clusterId);
        const req = {
          csr: csrPem,
          validityDuration: opts.validity ?? 0,
          metadata: plainToStruct(opts.metadata ?? {}),
        };
        (
          client as unknown as {
            CreateCertificate: grpc.requestCallback<unknown> & ((...a: unknown[]) => void);
          }
        ).CreateCertificate(
          req,
          md,
          { deadline: Date.now() + 10_000 },
          (err: grpc.ServiceError | null, res?: { certChain: string[] }) =>
            err ? reject(err) : resolve(res!.certChain),
        );
      }),
    close: () => client.close(),
  };
}

/** Asserts that `p` fails with gRPC status `code` and details matching `re`. */
export async function rejects(p: Promise<unknown>, code: grpc.status, re: RegExp): Promise<void> {
  await assert.rejects(p, (e: grpc.ServiceError) => {
    assert.equal(e.code, code, `code ${grpc.status[e.code]}: ${e.details}`);
    assert.match(e.details, re);
    return true;
  });
}
