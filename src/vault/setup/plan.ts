// SetupSpec -> ordered steps. Pure: no Vault, no files. Order matters: mounts
// before what lives in them, the root before the intermediate it signs,
// policies before the auth roles that name them.

import { parseKvReference } from "../kv.js";
import type { AuthSetup, SetupSpec } from "./spec.js";
import type { SetupStep } from "./step.js";
import {
  approleRoleIdStep,
  approleSecretIdStep,
  authEnableStep,
  authRoleStep,
  jwtConfigStep,
  kubernetesConfigStep,
} from "./steps/auth.js";
import { kvSecretStep } from "./steps/kv.js";
import { intermediateStep, kvMountStep, pkiMountStep, roleStep, rootCaStep, urlsStep } from "./steps/pki.js";
import { policyStep } from "./steps/policy.js";

export function buildPlan(spec: SetupSpec): SetupStep[] {
  const steps: SetupStep[] = [];
  if (spec.root) {
    const r = spec.root.mount.path;
    steps.push(pkiMountStep(spec.root.mount, "root"));
    steps.push(rootCaStep(r, spec.root.source, spec.trustDomain));
    steps.push(urlsStep(r, spec.publicAddress));
  }
  if (spec.intermediate && spec.root) {
    const i = spec.intermediate.mount.path;
    steps.push(pkiMountStep(spec.intermediate.mount, "signing"));
    steps.push(intermediateStep(spec.intermediate, spec.root.mount.path, spec.trustDomain));
    steps.push(urlsStep(i, spec.publicAddress));
  }
  for (const m of spec.emptyMounts) steps.push(pkiMountStep(m, "intermediate (filled by meshvault)"));
  // Roles templated on an auth mount's accessor come after that mount is enabled (below).
  for (const role of spec.roles) if (!role.accessorOf) steps.push(roleStep(role));
  if (spec.kv) {
    steps.push(kvMountStep(spec.kv.mount, spec.kv.version));
    if (spec.authority.type === "vault-kv") {
      const certField = parseKvReference(spec.authority.certificate).field ?? "certificate";
      const keyField = parseKvReference(spec.authority.privateKey).field ?? "privateKey";
      for (const s of spec.kv.secrets) steps.push(kvSecretStep(s, certField, keyField));
    }
  }
  steps.push(policyStep(spec.policy, "the meshvault server"));
  if (spec.workloadPolicy) steps.push(policyStep(spec.workloadPolicy, "workloads (identity: workload)"));

  // Server and workload logins may share a mount (kubernetes): enable and configure it once.
  const configured = new Set<string>();
  const authSteps = (a: AuthSetup | undefined): void => {
    if (!a) return;
    const key = `${a.method}:${a.mount}`;
    if (!configured.has(key)) {
      configured.add(key);
      steps.push(authEnableStep(a.method, a.mount));
      if (a.method === "kubernetes") steps.push(kubernetesConfigStep(a));
      if (a.method === "jwt") steps.push(jwtConfigStep(a));
    }
    steps.push(authRoleStep(a));
    if (a.method === "approle") {
      steps.push(approleRoleIdStep(a));
      steps.push(approleSecretIdStep(a));
    }
  };
  authSteps(spec.serverAuth);
  authSteps(spec.workloadAuth);
  for (const role of spec.roles) if (role.accessorOf) steps.push(roleStep(role));
  return steps;
}
