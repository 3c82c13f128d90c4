// Kubernetes object names as they enter a workload identity: a namespace is a DNS-1123 label,
// a service account a DNS-1123 subdomain (Kubernetes' own validation). Anything else cannot be
// a real namespace or service account, so it must never become part of a SPIFFE ID.

const LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;

/** Why `ns` is not a valid namespace name (DNS-1123 label, at most 63 characters), or undefined. */
export function namespaceProblem(ns: string): string | undefined {
  if (ns.length === 0) return "is empty";
  if (ns.length > 63) return `is ${ns.length} characters; a namespace (DNS-1123 label) has at most 63`;
  if (!LABEL.test(ns))
    return "is not a DNS-1123 label: lowercase letters, digits and '-', starting and ending with a letter or digit";
  return undefined;
}

/** Why `sa` is not a valid service account name (DNS-1123 subdomain, at most 253 characters), or undefined. */
export function serviceAccountProblem(sa: string): string | undefined {
  if (sa.length === 0) return "is empty";
  if (sa.length > 253)
    return `is ${sa.length} characters; a service account (DNS-1123 subdomain) has at most 253`;
  if (!sa.split(".").every((l) => l.length <= 63 && LABEL.test(l)))
    return "is not a DNS-1123 subdomain: '.'-separated lowercase letters, digits and '-', each part starting and ending with a letter or digit";
  return undefined;
}

/**
 * Why `ref` is not `<namespace>/<name>` of a namespaced object (`what`, e.g. "ConfigMap"), or
 * undefined; messages quote `shown` (the value as the user wrote it).
 */
export function namespacedNameProblem(ref: string, what: string, shown = ref): string | undefined {
  const parts = ref.split("/");
  if (parts.length !== 2) return `${JSON.stringify(shown)} is not "<namespace>/<${what} name>"`;
  const ns = namespaceProblem(parts[0]!);
  if (ns) return `${JSON.stringify(shown)}: namespace ${JSON.stringify(parts[0])} ${ns}`;
  // Object names (ConfigMaps, Secrets, service accounts) are DNS-1123 subdomains.
  const name = serviceAccountProblem(parts[1]!)?.replace("a service account", `a ${what} name`);
  return name ? `${JSON.stringify(shown)}: ${what} name ${JSON.stringify(parts[1])} ${name}` : undefined;
}
