// Distinguished names: build the few attributes meshvault writes, render any name for humans.
import { children, DerError, expectTag, oid, oidString, seq, set, Tag, utf8, type Node } from "./der.js";
import { OID } from "./oids.js";

export interface NameFields {
  commonName?: string;
  organization?: string;
  organizationalUnit?: string;
}

/** RFC 5280 upper bounds (ub-common-name, ub-organization-name, ub-organizational-unit-name). */
export const MAX_NAME_ATTRIBUTE_LENGTH = 64;

/**
 * Encodes a Name; attributes in the order O, OU, CN (most general first). Empty name = empty
 * SEQUENCE. A value over 64 characters is an error (RFC 5280 appendix A upper bounds).
 */
export function encodeName(fields: NameFields): Uint8Array {
  const rdns: Uint8Array[] = [];
  const add = (type: string, value: string | undefined): void => {
    if (value === undefined) return;
    if ([...value].length > MAX_NAME_ATTRIBUTE_LENGTH)
      throw new DerError(
        `${SHORT[type]} ${JSON.stringify(value.slice(0, 20))}... is ${[...value].length} characters; a certificate name allows at most ${MAX_NAME_ATTRIBUTE_LENGTH}`,
      );
    rdns.push(set(seq(oid(type), utf8(value))));
  };
  add(OID.organization, fields.organization);
  add(OID.organizationalUnit, fields.organizationalUnit);
  add(OID.commonName, fields.commonName);
  return seq(...rdns);
}

/** `<base> (<detail>)` when that fits a 64-character name attribute, else `<base>` alone. */
export function fitCommonName(base: string, detail: string): string {
  const full = `${base} (${detail})`;
  return full.length <= MAX_NAME_ATTRIBUTE_LENGTH ? full : base;
}

const SHORT: Record<string, string> = {
  [OID.commonName]: "CN",
  [OID.organization]: "O",
  [OID.organizationalUnit]: "OU",
  "2.5.4.6": "C",
  "2.5.4.7": "L",
  "2.5.4.8": "ST",
  "2.5.4.5": "serialNumber",
  "0.9.2342.19200300.100.1.25": "DC",
};

const STRING_TAGS = new Set<number>([Tag.UTF8_STRING, Tag.PRINTABLE_STRING, Tag.IA5_STRING, 0x14, 0x1e]);

function decodeString(node: Node): string {
  if (node.tag === 0x1e) {
    // BMPString: UTF-16BE.
    let s = "";
    for (let i = 0; i + 1 < node.value.length; i += 2)
      s += String.fromCharCode((node.value[i]! << 8) | node.value[i + 1]!);
    return s;
  }
  return new TextDecoder().decode(node.value);
}

export interface NameAttribute {
  type: string;
  value: string;
}

export function decodeName(node: Node): NameAttribute[] {
  expectTag(node, Tag.SEQUENCE, "Name");
  const out: NameAttribute[] = [];
  for (const rdn of children(node)) {
    for (const atv of children(expectTag(rdn, Tag.SET, "RelativeDistinguishedName"))) {
      const parts = children(expectTag(atv, Tag.SEQUENCE, "AttributeTypeAndValue"));
      if (parts.length !== 2) throw new DerError("AttributeTypeAndValue must be a type and a value");
      const [t, v] = parts as [Node, Node];
      const type = oidString(t);
      out.push({
        type,
        value: STRING_TAGS.has(v.tag) ? decodeString(v) : `#${Buffer.from(v.raw).toString("hex")}`,
      });
    }
  }
  return out;
}

/** `O=acme, CN=root` style rendering; "(empty)" for an empty name. */
export function formatName(attrs: readonly NameAttribute[]): string {
  if (attrs.length === 0) return "(empty)";
  return attrs.map((a) => `${SHORT[a.type] ?? a.type}=${a.value}`).join(", ");
}

export function commonNameOf(attrs: readonly NameAttribute[]): string | undefined {
  return attrs.find((a) => a.type === OID.commonName)?.value;
}
