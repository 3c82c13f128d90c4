// Names a certificate may carry as dNSName / iPAddress SANs (RFC 5280 4.2.1.6): checked
// before encoding, so a bad configured name is an error rather than a mis-encoded SAN.
import { isIPv4, isIPv6 } from "node:net";

/** Why `name` is not a valid dNSName (RFC 1034 preferred syntax, optional leading `*.`), or undefined. */
export function dnsNameProblem(name: string): string | undefined {
  if (name.length === 0) return "is empty";
  if (name.length > 253) return `is ${name.length} characters, over the 253-character limit`;
  const labels = name.split(".");
  for (const [i, label] of labels.entries()) {
    if (label === "*" && i === 0 && labels.length > 1) continue;
    if (label.length === 0) return "has an empty label ('..', or a leading or trailing '.')";
    if (label.length > 63) return `has a label of ${label.length} characters, over 63`;
    if (!/^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?$/.test(label))
      return `has label ${JSON.stringify(label)}: use letters, digits and '-' (not first or last)`;
  }
  if (/^\d+$/.test(labels[labels.length - 1]!)) return "looks like an IP address: list it under ipAddresses";
  return undefined;
}

/** Why `ip` is not an IPv4 dotted quad or IPv6 address, or undefined. */
export function ipAddressProblem(ip: string): string | undefined {
  if (isIPv4(ip)) return undefined;
  if (isIPv6(ip)) {
    if (ip.includes("%")) return "has a zone index ('%...'), which a certificate cannot carry";
    if (ip.includes(".")) return "mixes IPv6 and dotted IPv4: write it in hex groups only";
    return undefined;
  }
  return "is not an IPv4 (a.b.c.d, each 0-255) or IPv6 address";
}
