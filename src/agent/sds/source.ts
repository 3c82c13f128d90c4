// The contract between the workload agent (which obtains and rotates
// certificates) and the SDS server (which hands them to Envoy).

/** One identity's current credentials, all PEM. */
export interface WorkloadSecrets {
  /** Leaf first, then intermediates (not the root). Served as `default`'s certificate_chain. */
  certChainPem: string;
  /** PKCS#8 or traditional PEM private key matching the leaf. Served as `default`'s private_key. */
  privateKeyPem: string;
  /** Trust anchors (one or more root certificates). Served as `ROOTCA`'s trusted_ca. */
  rootsPem: string;
}

export interface SecretSource {
  /** The credentials to serve now, or undefined while none has been issued yet. */
  current(): WorkloadSecrets | undefined;
  /** Called after `current()` changed (rotation, root change). Returns an unsubscribe function. */
  onChange(listener: () => void): () => void;
}

/** A SecretSource the owner updates by calling `set()`; what the agent (and tests) plug in. */
export interface MutableSecretSource extends SecretSource {
  set(secrets: WorkloadSecrets | undefined): void;
}

export function createMutableSecretSource(initial?: WorkloadSecrets): MutableSecretSource {
  let value = initial;
  const listeners = new Set<() => void>();
  return {
    current: () => value,
    onChange(listener) {
      listeners.add(listener);
      return () => {
        listeners.delete(listener);
      };
    },
    set(secrets) {
      value = secrets;
      for (const l of [...listeners]) l();
    },
  };
}
