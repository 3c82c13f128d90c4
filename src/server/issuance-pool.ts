// Issuance on every core: worker threads that verify CSRs and sign leaves (one job, one
// hand-off per certificate), so one
// `meshvault server` uses all cores for the work that dominates a certificate's CPU (the
// event loop keeps gRPC, TLS and caller authentication). Each worker loads a CA key once,
// when the first certificate under that key is signed after start or a reload/rotation;
// the material travels with the jobs, so every worker follows reloads. A job goes to the
// least busy ready worker; while none is ready (starting) or after one died, the work runs
// on this thread instead, so the server never waits for workers.
import { availableParallelism } from "node:os";
import { Worker } from "node:worker_threads";
import type { Logger } from "../log/logger.js";
import { CsrError } from "../pki/csr.js";
import { IssueError } from "../pki/issue.js";
import type { SpiffeId } from "../pki/spiffe.js";
import type { SignRequest } from "../authority/authority.js";
import { leafOptions, signLeaf, type CaMaterial, type LeafSigner } from "../authority/ca-material.js";
import type { WorkerReply, WorkerRequest } from "./issuance-worker.js";

/** CA materials kept in the workers: the current one plus a few in-flight predecessors. */
const KEEP_MATERIALS = 4;

interface Pending {
  resolve(v: unknown): void;
  reject(e: Error): void;
  /** The same work on this thread, if the worker dies first. */
  inline(): unknown;
}

interface Slot {
  worker: Worker;
  ready: boolean;
  dead: boolean;
  pending: Map<number, Pending>;
}

function rebuildError(r: { name: string; message: string }): Error {
  if (r.name === "CsrError") return new CsrError(r.message);
  if (r.name === "IssueError") return new IssueError(r.message);
  return new Error(r.message);
}

export class IssuancePool {
  private readonly slots: Slot[] = [];
  private readonly materialIds = new WeakMap<CaMaterial, number>();
  private readonly liveMaterials: number[] = [];
  private nextId = 0;
  private closed = false;
  private readyWaiters: (() => void)[] = [];
  /** Jobs done on a worker and on this thread (no worker ready, or a worker died). */
  readonly done = { worker: 0, inline: 0 };

  /** Starts `size` workers (in the background: work runs here until they are ready). */
  constructor(
    readonly size: number,
    private readonly log?: Logger,
  ) {
    const spawn = (): Worker => {
      if (!import.meta.url.endsWith(".ts"))
        return new Worker(new URL("./issuance-worker.js", import.meta.url));
      // Running from source (tests, benchmarks under tsx): tsx's loader hooks do not reach a
      // worker's entry module, so the worker registers them before importing the .ts module.
      const entry = JSON.stringify(new URL("./issuance-worker.ts", import.meta.url).href);
      return new Worker(`import("tsx/esm/api").then((t) => { t.register(); return import(${entry}); });`, {
        eval: true,
      });
    };
    for (let i = 0; i < size; i++) {
      const slot: Slot = { worker: spawn(), ready: false, dead: false, pending: new Map() };
      slot.worker.unref();
      slot.worker.on("message", (m: WorkerReply | { ready: true }) => this.onMessage(slot, m));
      slot.worker.on("error", (err) => this.onDeath(slot, err.message));
      slot.worker.on("exit", (code) => this.onDeath(slot, `exited with code ${code}`));
      this.slots.push(slot);
    }
  }

  /**
   * A LeafSigner for the authorities that hold CA material: signLeaf on a worker, the CSR's
   * signature check (when still due) in the same job.
   */
  readonly signLeaf: LeafSigner = (material: CaMaterial, request: SignRequest, identity: SpiffeId) => {
    const slot = this.pick();
    if (!slot) {
      this.done.inline++;
      return signLeaf(material, request, identity);
    }
    const id = this.materialId(material);
    const leaf = leafOptions(request, identity);
    const proof = "proof" in request.csr ? { proof: request.csr.proof } : {};
    return (
      this.send(
        slot,
        { op: "sign", id: 0, material: id, leaf, ...proof },
        () => signLeaf(material, request, identity).leafPem,
      ) as Promise<string>
    ).then((leafPem) => ({
      leafPem,
      intermediatesPem: material.intermediatesPem,
      rootsPem: material.rootsPem,
    }));
  };

  /** Resolves once every worker has started (tests; the server does not wait). */
  ready(): Promise<void> {
    if (this.slots.every((s) => s.ready || s.dead)) return Promise.resolve();
    return new Promise((r) => this.readyWaiters.push(r));
  }

  async close(): Promise<void> {
    this.closed = true;
    await Promise.all(this.slots.map((s) => s.worker.terminate()));
  }

  private wakeReadyWaiters(): void {
    if (!this.slots.every((s) => s.ready || s.dead)) return;
    for (const w of this.readyWaiters.splice(0)) w();
  }

  private pick(): Slot | undefined {
    let best: Slot | undefined;
    for (const s of this.slots)
      if (s.ready && !s.dead && (!best || s.pending.size < best.pending.size)) best = s;
    return best;
  }

  /** The material's number; the first time, every worker is sent its certificate and key. */
  private materialId(material: CaMaterial): number {
    let id = this.materialIds.get(material);
    if (id !== undefined) return id;
    id = ++this.nextId;
    this.materialIds.set(material, id);
    const msg: WorkerRequest = {
      op: "material",
      material: id,
      certDer: material.signer.cert.der,
      key: material.signer.key,
    };
    for (const s of this.slots) if (!s.dead) s.worker.postMessage(msg);
    this.liveMaterials.push(id);
    while (this.liveMaterials.length > KEEP_MATERIALS) {
      const old = this.liveMaterials.shift()!;
      for (const s of this.slots) if (!s.dead) s.worker.postMessage({ op: "forget", material: old });
    }
    return id;
  }

  private send(slot: Slot, msg: WorkerRequest & { id: number }, inline: () => unknown): Promise<unknown> {
    const id = ++this.nextId;
    return new Promise((resolve, reject) => {
      slot.pending.set(id, { resolve, reject, inline });
      slot.worker.postMessage({ ...msg, id });
    });
  }

  private onMessage(slot: Slot, m: WorkerReply | { ready: true }): void {
    if ("ready" in m) {
      slot.ready = true;
      this.wakeReadyWaiters();
      return;
    }
    const p = slot.pending.get(m.id);
    if (!p) return;
    slot.pending.delete(m.id);
    this.done.worker++;
    if (m.ok) p.resolve(m.value);
    else p.reject(rebuildError(m));
  }

  private onDeath(slot: Slot, why: string): void {
    if (slot.dead) return;
    slot.dead = true;
    if (!this.closed)
      this.log?.warn({ reason: why }, "an issuance worker stopped; its work now runs on the main thread");
    this.wakeReadyWaiters();
    for (const p of slot.pending.values()) {
      this.done.inline++;
      try {
        p.resolve(p.inline());
      } catch (err) {
        p.reject(err as Error);
      }
    }
    slot.pending.clear();
  }
}

/** The pool for the `workers` setting: one worker per core by default, none for 0. */
export function issuancePoolFor(workers: number | undefined, log?: Logger): IssuancePool | undefined {
  const n = workers ?? availableParallelism();
  return n > 0 ? new IssuancePool(n, log) : undefined;
}
