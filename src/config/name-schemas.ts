// Configuration fields that end up inside certificates or identities: checked when the file is read, so a
// bad name is a configuration error naming the field, not a mis-encoded certificate later.
import { z } from "zod";
import { dnsNameProblem, ipAddressProblem } from "../pki/dns-name.js";
import { namespaceProblem, serviceAccountProblem } from "../pki/kube-names.js";

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
/** A Kubernetes namespace: DNS-1123 label. */
export const namespaceSchema = checked("namespace", namespaceProblem);
/** A Kubernetes service account: DNS-1123 subdomain. */
export const serviceAccountSchema = checked("service account", serviceAccountProblem);
/** `<namespace>/<service-account>`, both valid Kubernetes names. */
export const nodeAccountSchema = checked("account", (v) => {
  const parts = v.split("/");
  if (parts.length !== 2) return 'is not "namespace/serviceaccount"';
  const ns = namespaceProblem(parts[0]!);
  if (ns) return `has a namespace that ${ns}`;
  const sa = serviceAccountProblem(parts[1]!);
  return sa ? `has a service account that ${sa}` : undefined;
});
