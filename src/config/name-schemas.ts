// Configuration fields that end up inside certificates: checked when the file is read, so a
// bad name is a configuration error naming the field, not a mis-encoded certificate later.
import { z } from "zod";
import { dnsNameProblem, ipAddressProblem } from "../pki/dns-name.js";

function checked(what: string, problem: (v: string) => string | undefined) {
  return z.string().superRefine((v, ctx) => {
    const p = problem(v);
    if (p) ctx.addIssue({ code: "custom", message: `${what} ${JSON.stringify(v)} ${p}` });
  });
}

/** A dNSName SAN: RFC 1034 labels, optional leading `*.`. */
export const dnsNameSchema = checked("DNS name", dnsNameProblem);
/** An iPAddress SAN: IPv4 dotted quad or IPv6. */
export const ipAddressSchema = checked("IP address", ipAddressProblem);
