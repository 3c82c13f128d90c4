// PEM armour: split bundles into blocks, join them back. Strict about what it
// accepts so that a truncated or tampered bundle is an error, not a silent drop.

export interface PemBlock {
  type: string;
  der: Uint8Array;
}

export class PemError extends Error {
  override name = "PemError";
}

const BASE64_BODY = /^[A-Za-z0-9+/\s]*(?:=\s*){0,2}$/;
const WHITESPACE = /\s/g;
const BLOCK = /-----BEGIN ([A-Z0-9 ]+)-----\r?\n([\s\S]*?)-----END ([A-Z0-9 ]+)-----/g;

/** Every PEM block in `text`, in order. Text between blocks (comments, `openssl` headers) is allowed. */
export function decodePem(text: string): PemBlock[] {
  const out: PemBlock[] = [];
  for (const m of text.matchAll(BLOCK)) {
    const [, begin, body, end] = m;
    if (begin !== end) throw new PemError(`PEM block BEGIN ${begin} closed by END ${end}`);
    // One pass over the body: only base64 characters and whitespace, padding only at the end,
    // a whole number of quads. (Buffer's decoder would silently skip anything else.)
    if (!BASE64_BODY.test(body!)) throw new PemError(`PEM block ${begin} has invalid base64 content`);
    const der = Buffer.from(body!, "base64");
    const chars = body!.length - (body!.match(WHITESPACE)?.length ?? 0);
    if (chars % 4 !== 0) throw new PemError(`PEM block ${begin} has invalid base64 content`);
    // Its own exact-size buffer: Buffer.from puts small results in a shared 8 KiB slab, which a
    // view would keep alive, and which structured clone (an issuance job) would copy whole.
    out.push({ type: begin!, der: new Uint8Array(der) });
  }
  if (out.length === 0 && text.includes("-----BEGIN")) throw new PemError("PEM block is not terminated");
  return out;
}

export function encodePem(type: string, der: Uint8Array): string {
  const b64 = Buffer.from(der.buffer, der.byteOffset, der.byteLength).toString("base64");
  const lines: string[] = [];
  for (let i = 0; i < b64.length; i += 64) lines.push(b64.slice(i, i + 64));
  return `-----BEGIN ${type}-----\n${lines.join("\n")}\n-----END ${type}-----\n`;
}

/** Splits a bundle into one PEM string per CERTIFICATE block. */
export function splitCertificates(text: string): string[] {
  return decodePem(text)
    .filter((b) => b.type === "CERTIFICATE")
    .map((b) => encodePem("CERTIFICATE", b.der));
}

/** Joins PEM blocks into one bundle with exactly one newline between blocks. */
export function joinPem(blocks: readonly string[]): string {
  return blocks.map((b) => (b.endsWith("\n") ? b : `${b}\n`)).join("");
}
