// envoy.service.secret.v3.SecretDiscoveryService for one identity (one SecretSource): owns the
// open streams, pushes to them when the source changes, answers FetchSecrets and refuses
// DeltaSecrets. Transport-free: startSdsServer puts it on a Unix socket.
import { randomUUID } from "node:crypto";
import * as grpc from "@grpc/grpc-js";
import type { Log } from "../../log/logger.js";
import { SECRET_TYPE_URL, type DiscoveryRequest, type DiscoveryResponse } from "./proto.js";
import {
  ResourceEncoder,
  SERVED_RESOURCES,
  VersionCounter,
  isServed,
  type EncodedResource,
} from "./resources.js";
import type { SecretSource } from "./source.js";
import { SdsStream, errorMessage, type StreamHost } from "./stream.js";

export interface SdsServiceStats {
  /** Open StreamSecrets streams. */
  streams: number;
  /** StreamSecrets responses sent since start. */
  pushes: number;
  /** NACKs received since start. */
  nacks: number;
}

export class SdsService {
  private readonly streams = new Set<SdsStream>();
  private readonly encoder = new ResourceEncoder();
  private readonly versions = new VersionCounter();
  private readonly unsubscribe: () => void;
  private nextStreamId = 1;
  private pushes = 0;
  private nacks = 0;
  private closing = false;
  private readonly host: StreamHost;

  constructor(
    private readonly source: SecretSource,
    private readonly log: Log,
  ) {
    this.host = {
      log,
      resources: () => this.resources(),
      nextVersion: () => this.versions.next(),
      onPush: () => void this.pushes++,
      onNack: () => void this.nacks++,
      onClosed: (s) => void this.streams.delete(s),
    };
    this.unsubscribe = source.onChange(() => this.pushAll("source-changed"));
  }

  /** Handlers for `grpc.Server.addService(sdsServiceDefinition, ...)`. */
  readonly handlers = {
    StreamSecrets: (call: grpc.ServerDuplexStream<DiscoveryRequest, DiscoveryResponse>): void => {
      if (this.closing) {
        call.emit("error", { code: grpc.status.UNAVAILABLE, details: "SDS server is shutting down" });
        return;
      }
      this.streams.add(new SdsStream(this.nextStreamId++, call, this.host));
    },
    FetchSecrets: (
      call: grpc.ServerUnaryCall<DiscoveryRequest, DiscoveryResponse>,
      callback: grpc.sendUnaryData<DiscoveryResponse>,
    ): void => {
      try {
        this.fetch(call.request, callback);
      } catch (err) {
        this.log.error({ err: errorMessage(err) }, "SDS: FetchSecrets failed");
        callback({ code: grpc.status.INTERNAL, details: "SDS server error" });
      }
    },
    DeltaSecrets: (call: grpc.ServerDuplexStream<unknown, unknown>): void => {
      call.emit("error", {
        code: grpc.status.UNIMPLEMENTED,
        details:
          "DeltaSecrets (incremental SDS) is not served, as with istio-agent; use StreamSecrets (state-of-the-world SDS)",
      });
    },
  };

  stats(): SdsServiceStats {
    return { streams: this.streams.size, pushes: this.pushes, nacks: this.nacks };
  }

  /** Stops pushing, ends every open stream and refuses new ones. Idempotent. */
  close(): void {
    if (this.closing) return;
    this.closing = true;
    this.unsubscribe();
    for (const s of [...this.streams]) s.end();
  }

  private resources(): ReadonlyMap<string, EncodedResource> | undefined {
    const secrets = this.source.current();
    return secrets && this.encoder.encode(secrets);
  }

  private pushAll(reason: string): void {
    if (this.closing) return;
    for (const s of [...this.streams]) {
      try {
        s.push(reason);
      } catch (err) {
        this.log.error({ stream: s.id, err: errorMessage(err) }, "SDS: push failed");
      }
    }
  }

  private fetch(req: DiscoveryRequest, callback: grpc.sendUnaryData<DiscoveryResponse>): void {
    if (req.type_url && req.type_url !== SECRET_TYPE_URL) {
      callback({ code: grpc.status.INVALID_ARGUMENT, details: `this server serves only ${SECRET_TYPE_URL}` });
      return;
    }
    const built = this.resources();
    if (!built) {
      callback({ code: grpc.status.UNAVAILABLE, details: "no certificate has been issued yet" });
      return;
    }
    const node = req.node?.id ?? "";
    const requested = req.resource_names?.length ? [...new Set(req.resource_names)] : [...SERVED_RESOURCES];
    const unknown = requested.filter((n) => !isServed(n));
    if (unknown.length > 0) this.log.warn({ node, unknown }, "SDS: FetchSecrets for unknown resources");
    this.log.debug({ node, resources: requested.filter(isServed) }, "SDS: FetchSecrets");
    callback(null, {
      version_info: this.versions.next(),
      resources: requested.flatMap((n) => built.get(n)?.any ?? []),
      type_url: SECRET_TYPE_URL,
      nonce: randomUUID(),
    });
  }
}
