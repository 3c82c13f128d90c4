// One issuance worker thread (see issuance-pool.ts): checks a CSR's signature and signs its
// leaf in one job, with the CA material the pool sent it (each CA key is loaded here once,
// on the first message that carries it). Pure CPU work, no I/O.
import { parentPort, type MessagePort } from "node:worker_threads";
import type { KeyObject } from "node:crypto";
import { parseCertificateDer } from "../pki/certificate.js";
import { verifyCsrProof, type CsrProof } from "../pki/csr.js";
import { createSigner, issueLeaf, type LeafOptions, type Signer } from "../pki/issue.js";

export type WorkerRequest =
  | { op: "material"; material: number; certDer: Uint8Array; key: KeyObject }
  | { op: "forget"; material: number }
  | { op: "sign"; id: number; material: number; leaf: LeafOptions; proof?: CsrProof };

export type WorkerReply =
  { id: number; ok: true; value: unknown } | { id: number; ok: false; name: string; message: string };

const signers = new Map<number, Signer>();
// Loaded outside a worker thread (a tool importing every module, as the package test does),
// there is no pool to serve: do nothing rather than throw at import.
if (parentPort) serve(parentPort);

function serve(port: MessagePort): void {
  port.on("message", (m: WorkerRequest) => {
    if (m.op === "material") {
      signers.set(m.material, createSigner(parseCertificateDer(m.certDer), m.key));
      return;
    }
    if (m.op === "forget") {
      signers.delete(m.material);
      return;
    }
    let reply: WorkerReply;
    try {
      const signer = signers.get(m.material);
      if (!signer) throw new Error(`issuance worker has no CA material #${m.material}`);
      if (m.proof) verifyCsrProof(m.proof);
      reply = { id: m.id, ok: true, value: issueLeaf(signer, m.leaf).pem };
    } catch (err) {
      const e = err as Error;
      reply = { id: m.id, ok: false, name: e.name, message: e.message };
    }
    port.postMessage(reply);
  });
  port.postMessage({ ready: true });
}
