// Minimal DER reader and writer: just what X.509 and PKCS#10 need. Hand-written
// because certificate issuance is the hot path; @peculiar/x509 is the test oracle.

export const Tag = {
  BOOLEAN: 0x01,
  INTEGER: 0x02,
  BIT_STRING: 0x03,
  OCTET_STRING: 0x04,
  NULL: 0x05,
  OID: 0x06,
  UTF8_STRING: 0x0c,
  PRINTABLE_STRING: 0x13,
  IA5_STRING: 0x16,
  UTC_TIME: 0x17,
  GENERALIZED_TIME: 0x18,
  SEQUENCE: 0x30,
  SET: 0x31,
} as const;

export class DerError extends Error {
  override name = "DerError";
}

/** One decoded TLV; `value` and `raw` are views into the input, never copies. */
export interface Node {
  tag: number;
  /** Contents octets. */
  value: Uint8Array;
  /** The whole TLV (header + contents), as needed for signature input. */
  raw: Uint8Array;
}

/** Reads one TLV at `offset`; returns the node and the offset after it. */
export function readNode(buf: Uint8Array, offset = 0): { node: Node; next: number } {
  if (offset + 2 > buf.length) throw new DerError("truncated DER: missing tag or length");
  const tag = buf[offset]!;
  if ((tag & 0x1f) === 0x1f) throw new DerError("unsupported DER: multi-byte tag");
  let len = buf[offset + 1]!;
  let pos = offset + 2;
  if (len & 0x80) {
    const n = len & 0x7f;
    if (n === 0) throw new DerError("invalid DER: indefinite length is not DER");
    if (n > 4) throw new DerError("invalid DER: length too large");
    if (pos + n > buf.length) throw new DerError("truncated DER: length bytes missing");
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + buf[pos + i]!;
    if (len < 0x80 || (n > 1 && buf[pos] === 0)) throw new DerError("invalid DER: non-minimal length");
    pos += n;
  }
  const end = pos + len;
  if (end > buf.length) throw new DerError("truncated DER: content shorter than its length");
  return { node: { tag, value: buf.subarray(pos, end), raw: buf.subarray(offset, end) }, next: end };
}

/** Decodes exactly one TLV spanning the whole input; extra bytes are an error. */
export function decodeOne(buf: Uint8Array): Node {
  const { node, next } = readNode(buf, 0);
  if (next !== buf.length)
    throw new DerError(`trailing garbage: ${buf.length - next} bytes after the DER structure`);
  return node;
}

/** The children of a constructed node. */
export function children(node: Node): Node[] {
  const out: Node[] = [];
  let pos = 0;
  while (pos < node.value.length) {
    const { node: child, next } = readNode(node.value, pos);
    out.push(child);
    pos = next;
  }
  return out;
}

export function expectTag(node: Node | undefined, tag: number, what: string): Node {
  if (!node) throw new DerError(`${what}: missing`);
  if (node.tag !== tag)
    throw new DerError(`${what}: expected tag 0x${tag.toString(16)}, got 0x${node.tag.toString(16)}`);
  return node;
}

export function decodeOid(value: Uint8Array): string {
  if (value.length === 0) throw new DerError("invalid OID: empty");
  const parts: number[] = [];
  let acc = 0;
  for (let i = 0; i < value.length; i++) {
    const b = value[i]!;
    acc = acc * 128 + (b & 0x7f);
    if (!(b & 0x80)) {
      if (parts.length === 0) {
        const first = acc < 80 ? Math.floor(acc / 40) : 2;
        parts.push(first, acc - first * 40);
      } else parts.push(acc);
      acc = 0;
    } else if (i === value.length - 1) throw new DerError("invalid OID: truncated arc");
  }
  return parts.join(".");
}

export function oidString(node: Node): string {
  return decodeOid(expectTag(node, Tag.OID, "object identifier").value);
}

// ---------- writer ----------

function lengthBytes(len: number): number[] {
  if (len < 0x80) return [len];
  const bytes: number[] = [];
  while (len > 0) {
    bytes.unshift(len & 0xff);
    len = Math.floor(len / 256);
  }
  return [0x80 | bytes.length, ...bytes];
}

/** Encodes a TLV from already-encoded contents. */
export function tlv(tag: number, ...contents: Uint8Array[]): Uint8Array {
  let total = 0;
  for (const c of contents) total += c.length;
  const header = lengthBytes(total);
  const out = new Uint8Array(1 + header.length + total);
  out[0] = tag;
  out.set(header, 1);
  let pos = 1 + header.length;
  for (const c of contents) {
    out.set(c, pos);
    pos += c.length;
  }
  return out;
}

export const seq = (...items: Uint8Array[]): Uint8Array => tlv(Tag.SEQUENCE, ...items);
export const set = (...items: Uint8Array[]): Uint8Array => tlv(Tag.SET, ...items);
/** Context-specific constructed [n] (explicit tagging). */
export const explicit = (n: number, ...items: Uint8Array[]): Uint8Array => tlv(0xa0 | n, ...items);
export const octetString = (b: Uint8Array): Uint8Array => tlv(Tag.OCTET_STRING, b);
export const bitString = (b: Uint8Array): Uint8Array => tlv(Tag.BIT_STRING, Uint8Array.of(0), b);
export const boolean = (v: boolean): Uint8Array => tlv(Tag.BOOLEAN, Uint8Array.of(v ? 0xff : 0));
export const utf8 = (s: string): Uint8Array => tlv(Tag.UTF8_STRING, new TextEncoder().encode(s));
export const nullValue = (): Uint8Array => Uint8Array.of(Tag.NULL, 0);

const oidCache = new Map<string, Uint8Array>();
export function oid(dotted: string): Uint8Array {
  const cached = oidCache.get(dotted);
  if (cached) return cached;
  const arcs = dotted.split(".").map(Number);
  const bytes: number[] = [];
  const pushArc = (n: number): void => {
    const stack = [n & 0x7f];
    n = Math.floor(n / 128);
    while (n > 0) {
      stack.unshift((n & 0x7f) | 0x80);
      n = Math.floor(n / 128);
    }
    bytes.push(...stack);
  };
  pushArc(arcs[0]! * 40 + arcs[1]!);
  for (const a of arcs.slice(2)) pushArc(a);
  const enc = tlv(Tag.OID, Uint8Array.from(bytes));
  oidCache.set(dotted, enc);
  return enc;
}

/** INTEGER from unsigned big-endian magnitude bytes (adds the sign byte when needed). */
export function unsignedInteger(magnitude: Uint8Array): Uint8Array {
  let start = 0;
  while (start < magnitude.length - 1 && magnitude[start] === 0) start++;
  const m = magnitude.subarray(start);
  return m[0]! & 0x80 ? tlv(Tag.INTEGER, Uint8Array.of(0), m) : tlv(Tag.INTEGER, m);
}

export function smallInteger(n: number): Uint8Array {
  if (n < 0 || n > 0x7fffffff) throw new DerError("smallInteger out of range");
  const bytes: number[] = [];
  do {
    bytes.unshift(n & 0xff);
    n = Math.floor(n / 256);
  } while (n > 0);
  if (bytes[0]! & 0x80) bytes.unshift(0);
  return tlv(Tag.INTEGER, Uint8Array.from(bytes));
}

/** UTCTime through 2049, GeneralizedTime after, as RFC 5280 4.1.2.5 requires. */
export function time(d: Date): Uint8Array {
  const y = d.getUTCFullYear();
  const p = (n: number): string => String(n).padStart(2, "0");
  const rest = `${p(d.getUTCMonth() + 1)}${p(d.getUTCDate())}${p(d.getUTCHours())}${p(d.getUTCMinutes())}${p(d.getUTCSeconds())}Z`;
  if (y >= 1950 && y < 2050) return tlv(Tag.UTC_TIME, new TextEncoder().encode(`${p(y % 100)}${rest}`));
  return tlv(Tag.GENERALIZED_TIME, new TextEncoder().encode(`${String(y).padStart(4, "0")}${rest}`));
}

export function parseTime(node: Node): Date {
  const s = new TextDecoder().decode(node.value);
  let m: RegExpMatchArray | null;
  if (node.tag === Tag.UTC_TIME && (m = s.match(/^(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})Z$/))) {
    const yy = Number(m[1]);
    return new Date(Date.UTC(yy < 50 ? 2000 + yy : 1900 + yy, +m[2]! - 1, +m[3]!, +m[4]!, +m[5]!, +m[6]!));
  }
  if (node.tag === Tag.GENERALIZED_TIME && (m = s.match(/^(\d{4})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})Z$/))) {
    return new Date(Date.UTC(+m[1]!, +m[2]! - 1, +m[3]!, +m[4]!, +m[5]!, +m[6]!));
  }
  throw new DerError(`invalid time value ${JSON.stringify(s)}`);
}

export function concat(...parts: Uint8Array[]): Uint8Array {
  let total = 0;
  for (const p of parts) total += p.length;
  const out = new Uint8Array(total);
  let pos = 0;
  for (const p of parts) {
    out.set(p, pos);
    pos += p.length;
  }
  return out;
}

export function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}
