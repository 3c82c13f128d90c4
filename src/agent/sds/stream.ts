// One StreamSecrets stream: its subscription, what it was last sent, and the state-of-the-world
// xDS rules Envoy expects from istio-agent:
// - a request carrying a response_nonce that is not the nonce of this stream's latest response
//   is stale and ignored (the client will answer the latest one);
// - a request is answered only if a subscribed, served resource differs from what this stream
//   was last sent: an ACK is never answered, and a NACK (error_detail set) is logged once and
//   not answered with the content it rejected; the next push comes when the content changes;
// - unknown resource names are logged once per stream and left out of responses (Envoy keeps
//   them warming); a non-Secret type_url ends the stream with INVALID_ARGUMENT.
// Nothing a client sends may throw out of here: this runs inside grpc-js's message dispatch,
// where a throw would be uncaught and end the process.
import { randomUUID } from "node:crypto";
import * as grpc from "@grpc/grpc-js";
import type { Log } from "../../log/logger.js";
import { SECRET_TYPE_URL, type DiscoveryRequest, type DiscoveryResponse } from "./proto.js";
import { SERVED_RESOURCES, isServed, type EncodedResource } from "./resources.js";

export type SdsCall = grpc.ServerDuplexStream<DiscoveryRequest, DiscoveryResponse>;

/** What a stream needs from the service that owns it. */
export interface StreamHost {
  readonly log: Log;
  /** The resources to serve now, or undefined while no certificate has been issued. */
  resources(): ReadonlyMap<string, EncodedResource> | undefined;
  nextVersion(): string;
  onPush(): void;
  onNack(): void;
  onClosed(stream: SdsStream): void;
}

export class SdsStream {
  private node = "";
  private names: string[] = [];
  private lastNonce: string | undefined;
  private lastNackedNonce: string | undefined;
  /** name -> fingerprint of what this stream was last sent. */
  private sent = new Map<string, string>();
  private readonly warnedUnknown = new Set<string>();
  private waitingLogged = false;
  private closed = false;

  constructor(
    readonly id: number,
    private readonly call: SdsCall,
    private readonly host: StreamHost,
  ) {
    host.log.debug({ stream: id }, "SDS: stream opened");
    call.on("data", (req: DiscoveryRequest) => this.receive(req));
    call.on("end", () => {
      this.finish("client half-closed");
      call.end();
    });
    call.on("cancelled", () => this.finish("cancelled"));
    call.on("close", () => this.finish("closed"));
    // Also what keeps a write to a client that has gone from becoming an uncaught 'error'.
    call.on("error", (err: unknown) => this.finish(`error: ${errorMessage(err)}`));
  }

  /** Sends the subscribed resources if any of them changed since this stream's last response. */
  push(reason: string): void {
    if (this.closed || this.names.length === 0) return;
    const built = this.host.resources();
    if (!built) {
      if (!this.waitingLogged) {
        this.waitingLogged = true;
        this.host.log.info(
          { stream: this.id, node: this.node, resources: this.names },
          "SDS: no certificate yet; will push when issued",
        );
      }
      return;
    }
    const desired = this.names.flatMap((n) => built.get(n) ?? []);
    if (!desired.some((r) => this.sent.get(r.name) !== r.fingerprint)) return;
    const response: DiscoveryResponse = {
      version_info: this.host.nextVersion(),
      resources: desired.map((r) => r.any),
      type_url: SECRET_TYPE_URL,
      nonce: randomUUID(),
    };
    this.lastNonce = response.nonce;
    this.sent = new Map(desired.map((r) => [r.name, r.fingerprint]));
    this.host.onPush();
    this.call.write(response);
    this.host.log.info(
      {
        stream: this.id,
        node: this.node,
        resources: desired.map((r) => r.name),
        version: response.version_info,
        nonce: response.nonce,
        reason,
      },
      "SDS: pushed secrets",
    );
  }

  /** Ends the stream from our side (shutdown) with `code`, OK by default. */
  end(code = grpc.status.OK, details = "SDS server is shutting down"): void {
    if (this.closed) return;
    this.finish("server closing");
    if (code === grpc.status.OK) this.call.end();
    else this.call.emit("error", { code, details });
  }

  private receive(req: DiscoveryRequest): void {
    try {
      this.handle(req);
    } catch (err) {
      // A bug here must cost this stream only.
      try {
        this.host.log.error({ stream: this.id, err: errorMessage(err) }, "SDS: failed to handle request");
        this.end(grpc.status.INTERNAL, "SDS server error; reconnect");
      } catch {
        this.call.destroy();
      }
    }
  }

  private handle(req: DiscoveryRequest): void {
    if (this.closed) return;
    const log = this.host.log;
    if (req.node?.id && this.node === "") this.node = req.node.id;
    if (req.type_url && req.type_url !== SECRET_TYPE_URL) {
      log.warn(
        { stream: this.id, node: this.node, typeUrl: req.type_url },
        "SDS: request for a non-Secret type; ending stream",
      );
      this.end(
        grpc.status.INVALID_ARGUMENT,
        `this server serves only ${SECRET_TYPE_URL}, not ${req.type_url}`,
      );
      return;
    }
    const nonce = req.response_nonce ?? "";
    if (nonce !== "" && this.lastNonce !== undefined && nonce !== this.lastNonce) {
      log.debug(
        { stream: this.id, node: this.node, nonce, latest: this.lastNonce },
        "SDS: stale nonce; request ignored",
      );
      return;
    }

    const names = [...new Set(req.resource_names ?? [])];
    for (const n of names) {
      if (!isServed(n) && !this.warnedUnknown.has(n)) {
        this.warnedUnknown.add(n);
        log.warn(
          { stream: this.id, node: this.node, resource: n, served: SERVED_RESOURCES },
          "SDS: unknown resource requested; not served",
        );
      }
    }
    const subscriptionChanged =
      names.length !== this.names.length || names.some((n, i) => n !== this.names[i]);
    this.names = names;

    let reason = "request";
    if (req.error_detail) {
      if (this.lastNackedNonce !== nonce) {
        this.lastNackedNonce = nonce;
        this.host.onNack();
        log.warn(
          {
            stream: this.id,
            node: this.node,
            nonce,
            version: req.version_info ?? "",
            code: req.error_detail.code ?? 0,
            detail: req.error_detail.message ?? "",
          },
          "SDS: Envoy rejected secrets (NACK); not resending until they change",
        );
      }
      reason = "nack-with-new-subscription";
    } else if (nonce !== "") {
      log.debug({ stream: this.id, node: this.node, nonce, version: req.version_info ?? "" }, "SDS: ACK");
      reason = "subscription-changed";
    }
    // ACKs and NACKs lead to a response only when they changed the subscription to something
    // not yet sent.
    if (nonce === "" || subscriptionChanged) this.push(reason);
  }

  private finish(why: string): void {
    if (this.closed) return;
    this.closed = true;
    this.host.onClosed(this);
    this.host.log.debug({ stream: this.id, node: this.node, why }, "SDS: stream closed");
  }
}

export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
