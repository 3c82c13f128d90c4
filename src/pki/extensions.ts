// X.509 v3 extensions: decode what a CSR or certificate carries, encode what we issue.
import {
  boolean,
  children,
  DerError,
  decodeOne,
  expectTag,
  octetString,
  oid,
  oidString,
  seq,
  smallInteger,
  Tag,
  tlv,
  type Node,
} from "./der.js";
import { dnsNameProblem, ipAddressProblem } from "./dns-name.js";

export interface Extension {
  oid: string;
  critical: boolean;
  /** Contents of extnValue (the DER inside the OCTET STRING). */
  value: Uint8Array;
}

/**
 * Extensions ::= SEQUENCE OF Extension; every OID at most once (RFC 5280 4.2). `strict`
 * (requests) also refuses an explicit critical FALSE, which DER forbids (DEFAULT omitted).
 */
export function decodeExtensions(node: Node, opts: { strict?: boolean } = {}): Extension[] {
  const out: Extension[] = [];
  const seen = new Set<string>();
  for (const ext of children(expectTag(node, Tag.SEQUENCE, "Extensions"))) {
    const parts = children(expectTag(ext, Tag.SEQUENCE, "Extension"));
    if (parts.length < 2 || parts.length > 3) throw new DerError("Extension must be OID, [critical], value");
    const id = oidString(parts[0]!);
    let critical = false;
    let valueNode = parts[1];
    if (parts.length === 3) {
      const flag = expectTag(valueNode, Tag.BOOLEAN, `extension ${id} critical flag`).value;
      if (flag.length !== 1) throw new DerError(`extension ${id}: malformed critical flag`);
      if (opts.strict && flag[0] !== 0xff)
        throw new DerError(`extension ${id}: critical must be omitted or TRUE (0xff) in DER`);
      critical = flag[0] !== 0;
      valueNode = parts[2];
    }
    const value = expectTag(valueNode, Tag.OCTET_STRING, `extension ${id} value`).value;
    if (seen.has(id)) throw new DerError(`extension ${id} appears twice`);
    seen.add(id);
    out.push({ oid: id, critical, value });
  }
  return out;
}

export interface SubjectAltNames {
  uris: string[];
  dnsNames: string[];
  ipAddresses: string[];
  emails: string[];
  other: number;
}

function formatIp(b: Uint8Array): string {
  if (b.length === 4) return Array.from(b).join(".");
  if (b.length === 16) {
    const groups: string[] = [];
    for (let i = 0; i < 16; i += 2) groups.push(((b[i]! << 8) | b[i + 1]!).toString(16));
    return groups.join(":");
  }
  return `#${Buffer.from(b).toString("hex")}`;
}

export function decodeSubjectAltNames(value: Uint8Array, into?: SubjectAltNames): SubjectAltNames {
  const out = into ?? { uris: [], dnsNames: [], ipAddresses: [], emails: [], other: 0 };
  for (const gn of children(expectTag(decodeOne(value), Tag.SEQUENCE, "SubjectAltName"))) {
    const text = (): string => new TextDecoder().decode(gn.value);
    switch (gn.tag) {
      case 0x81:
        out.emails.push(text());
        break;
      case 0x82:
        out.dnsNames.push(text());
        break;
      case 0x86:
        out.uris.push(text());
        break;
      case 0x87:
        out.ipAddresses.push(formatIp(gn.value));
        break;
      default:
        out.other++;
    }
  }
  return out;
}

export interface BasicConstraints {
  ca: boolean;
  pathLen?: number;
}

/** BasicConstraints ::= SEQUENCE { cA BOOLEAN DEFAULT FALSE, pathLenConstraint INTEGER OPTIONAL }, nothing else. */
export function decodeBasicConstraints(value: Uint8Array): BasicConstraints {
  const node = decodeOne(value);
  const parts = children(expectTag(node, Tag.SEQUENCE, "BasicConstraints"));
  let ca = false;
  let pathLen: number | undefined;
  let i = 0;
  if (parts[i]?.tag === Tag.BOOLEAN) {
    const v = parts[i++]!.value;
    if (v.length !== 1) throw new DerError("BasicConstraints: malformed cA flag");
    ca = v[0] !== 0;
  }
  if (parts[i]?.tag === Tag.INTEGER) {
    const v = parts[i++]!.value;
    if (v.length === 0 || v.length > 4 || v[0]! & 0x80)
      throw new DerError("BasicConstraints: bad pathLenConstraint");
    pathLen = v.reduce((a, b) => a * 256 + b, 0);
  }
  if (i !== parts.length) throw new DerError("BasicConstraints has unexpected elements");
  return pathLen === undefined ? { ca } : { ca, pathLen };
}

/** KeyUsage bits as names (RFC 5280 4.2.1.3 order). */
const KEY_USAGE_NAMES = [
  "digitalSignature",
  "nonRepudiation",
  "keyEncipherment",
  "dataEncipherment",
  "keyAgreement",
  "keyCertSign",
  "cRLSign",
  "encipherOnly",
  "decipherOnly",
] as const;
export type KeyUsageName = (typeof KEY_USAGE_NAMES)[number];

export function decodeKeyUsage(value: Uint8Array): KeyUsageName[] {
  const node = decodeOne(value);
  const bits = expectTag(node, Tag.BIT_STRING, "KeyUsage").value;
  const out: KeyUsageName[] = [];
  KEY_USAGE_NAMES.forEach((name, i) => {
    const byte = bits[1 + (i >> 3)];
    if (byte !== undefined && byte & (0x80 >> (i & 7))) out.push(name);
  });
  return out;
}

export function decodeExtKeyUsage(value: Uint8Array): string[] {
  const node = decodeOne(value);
  return children(expectTag(node, Tag.SEQUENCE, "ExtKeyUsage")).map(oidString);
}

export function decodeKeyIdentifier(value: Uint8Array, aki: boolean): Uint8Array | undefined {
  const node = decodeOne(value);
  if (!aki) return expectTag(node, Tag.OCTET_STRING, "SubjectKeyIdentifier").value;
  return children(expectTag(node, Tag.SEQUENCE, "AuthorityKeyIdentifier")).find((c) => c.tag === 0x80)?.value;
}

// ---------- encoders ----------

export function encodeExtension(id: string, critical: boolean, value: Uint8Array): Uint8Array {
  return critical ? seq(oid(id), boolean(true), octetString(value)) : seq(oid(id), octetString(value));
}

export function encodeKeyUsage(names: readonly KeyUsageName[]): Uint8Array {
  let mask = 0;
  for (const n of names) mask |= 0x8000 >> KEY_USAGE_NAMES.indexOf(n);
  // DER BIT STRING: drop trailing zero bytes and state the unused bits of the last one.
  const bytes = mask & 0xff ? [mask >> 8, mask & 0xff] : [mask >> 8];
  const last = bytes[bytes.length - 1]!;
  let unused = 0;
  while (unused < 8 && !(last & (1 << unused))) unused++;
  return tlv(Tag.BIT_STRING, Uint8Array.from([unused, ...bytes]));
}

export function encodeBasicConstraints(ca: boolean, pathLen?: number): Uint8Array {
  if (!ca) return seq();
  return pathLen === undefined ? seq(boolean(true)) : seq(boolean(true), smallInteger(pathLen));
}

export function encodeExtKeyUsage(oids: readonly string[]): Uint8Array {
  return seq(...oids.map((o) => oid(o)));
}

export function encodeUriSans(uris: readonly string[]): Uint8Array {
  return seq(...uris.map((u) => tlv(0x86, new TextEncoder().encode(u))));
}

export function encodeDnsSans(
  names: readonly string[],
  ips: readonly string[] = [],
  uris: readonly string[] = [],
): Uint8Array {
  const items: Uint8Array[] = names.map((n) => {
    const problem = dnsNameProblem(n);
    if (problem) throw new DerError(`DNS name ${JSON.stringify(n)} ${problem}`);
    return tlv(0x82, new TextEncoder().encode(n));
  });
  for (const u of uris) items.push(tlv(0x86, new TextEncoder().encode(u)));
  for (const ip of ips) items.push(tlv(0x87, encodeIp(ip)));
  return seq(...items);
}

function encodeIp(ip: string): Uint8Array {
  const problem = ipAddressProblem(ip);
  if (problem) throw new DerError(`IP address ${JSON.stringify(ip)} ${problem}`);
  if (!ip.includes(":")) return Uint8Array.from(ip.split(".").map(Number));
  const [head = "", tail = ""] = ip.split("::");
  const h = head ? head.split(":") : [];
  const t = ip.includes("::") ? (tail ? tail.split(":") : []) : [];
  const groups = [...h, ...Array<string>(8 - h.length - t.length).fill("0"), ...t].map((g) =>
    parseInt(g, 16),
  );
  return Uint8Array.from(groups.flatMap((g) => [g >> 8, g & 0xff]));
}

export function encodeSki(ski: Uint8Array): Uint8Array {
  return octetString(ski);
}

export function encodeAki(keyId: Uint8Array): Uint8Array {
  return seq(tlv(0x80, keyId));
}
