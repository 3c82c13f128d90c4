// `meshvault cacerts`: istiod's plug-in CA from a Vault intermediate, into the
// `cacerts` Secret (seed 002) or, with --out-dir, a memory-backed directory next to
// istiod (seed 003); or, with --source vault-kv, the CA pair kept in Vault KV (seed 001).
// Thin wiring of src/kube/cacerts*.ts; the flags are declared in commands/cacerts.ts.
import { loadServerConfig } from "../config/load.js";
import { vaultConnectionFromConfig } from "../config/vault-schema.js";
import { parseDuration } from "../config/duration.js";
import { createLogger } from "../log/logger.js";
import { KEY_ALGORITHMS, type KeyAlgorithm } from "../pki/keys.js";
import { connectVault, type VaultClient } from "../vault/index.js";
import { cacertsRotation } from "../rotation/cacerts-plan.js";
import { rotationStateRef, rotationStore } from "../rotation/server-hook.js";
import { loadKubeConfig } from "../kube/client.js";
import { runCaCerts, syncCaCerts, type CaCertsOptions } from "../kube/cacerts.js";
import { followKvCaCerts, syncKvCaCerts } from "../kube/cacerts-kv.js";
import { VaultKvAuthority } from "../authority/vault/vault-kv.js";
import { DirSink, SecretSink, type CaCertsSink } from "../kube/cacerts-sinks.js";
import {
  LocalIntermediateSource,
  VaultIntermediateSource,
  type IntermediateSource,
} from "../kube/intermediate-source.js";
import { CloserStack } from "../lifecycle/closer-stack.js";
import { UsageError } from "./errors.js";
import { closeOnSignal, type ShutdownOptions } from "./shutdown.js";
import type { CaCertsFlags } from "./commands/cacerts.js";

function fail(msg: string): never {
  throw new UsageError(`cacerts: ${msg}`);
}

export async function runCaCertsCommand(flags: CaCertsFlags): Promise<void> {
  const config = loadServerConfig({
    ...(flags.config ? { file: flags.config } : {}),
    overrides: {
      trustDomain: flags.trustDomain,
      dataDir: flags.dataDir,
      "log.level": flags.logLevel,
      "log.format": flags.logFormat,
    },
  });
  const log = createLogger({ level: config.log.level, format: config.log.format, name: "meshvault-cacerts" });
  const vi = config.authority.type === "vault-intermediate" ? config.authority : undefined;
  const ttl = flags.ttl ? parseDuration(flags.ttl) : (vi?.ttl ?? 720 * 3600);
  const renewAt = flags.renewAt ? Number(flags.renewAt) : (vi?.renewAt ?? 0.5);
  if (!(renewAt > 0 && renewAt < 1))
    fail(`--renew-at ${flags.renewAt} must be a fraction between 0 and 1, e.g. 0.5`);
  const keyAlgorithm = (flags.keyAlgorithm ?? vi?.keyAlgorithm ?? "ec-p256") as KeyAlgorithm;
  if (!KEY_ALGORITHMS.includes(keyAlgorithm))
    fail(`--key-algorithm ${keyAlgorithm} is not one of ${KEY_ALGORITHMS.join(", ")}`);
  const commonName = flags.commonName ?? vi?.commonName;

  const sink: CaCertsSink = flags.outDir
    ? new DirSink(flags.outDir)
    : new SecretSink({
        kubeConfig: loadKubeConfig({ kubeconfig: flags.kubeconfig ?? config.kubernetes?.kubeconfig }),
        namespace: flags.namespace,
        name: flags.secretName,
      });
  const caLog = log.child({ component: "cacerts" });

  if (flags.source === "vault-kv") {
    // The vault-kv authority's own references, validation and version polling.
    const kv = config.authority.type === "vault-kv" ? config.authority : undefined;
    const poll = flags.pollInterval ? parseDuration(flags.pollInterval) : (kv?.pollInterval ?? 30);
    if (!flags.once && !(poll > 0)) fail(`--poll-interval ${flags.pollInterval} must be longer than 0s`);
    let authority: VaultKvAuthority;
    try {
      authority = new VaultKvAuthority({
        vault: connectVault(vaultConnectionFromConfig(config.vault)),
        certificate: flags.kvCertificate ?? kv?.certificate ?? "vault:secret/data/pki/istiod#certificate",
        privateKey: flags.kvPrivateKey ?? kv?.privateKey ?? "vault:secret/data/pki/istiod#privateKey",
        chain: flags.kvChain ?? kv?.chain,
        root: flags.kvRoot ?? kv?.root,
        pollIntervalMs: flags.once ? 0 : poll * 1000,
        log: log.child({ component: "vault-kv" }),
      });
    } catch (err) {
      fail((err as Error).message);
    }
    const closers = new CloserStack();
    closers.defer(() => authority.close());
    const opts = { authority, sink, tlsLayout: flags.tlsLayout ?? false, log: caLog };
    if (flags.once) {
      try {
        const r = await syncKvCaCerts(opts);
        caLog.info(
          { sink: sink.description, ca: r.ca, write: r.write, notAfter: r.notAfter.toISOString() },
          "CA from Vault KV",
        );
      } finally {
        await closers.closeOrThrow();
      }
      return;
    }
    await closers.unlessStartFails(async () => {
      const runner = followKvCaCerts(opts);
      closers.defer(() => runner.stop());
      await runner.ready;
    });
    await untilClosed(log, () => closers.closeOrThrow());
    return;
  }

  let source: IntermediateSource;
  let vaultClient: VaultClient | undefined;
  // Last-first: the loop, the Vault clients the rotation store opened, the source. close()
  // rejects with a closer's error, so the command fails with it.
  const closers = new CloserStack();
  if (flags.source === "local") {
    source = new LocalIntermediateSource({
      dataDir: config.dataDir,
      trustDomain: config.trustDomain,
      ttlSeconds: ttl,
      keyAlgorithm,
      commonName,
    });
  } else if (flags.source === "vault") {
    const mode = flags.mode ?? vi?.mode ?? "csr";
    if (mode !== "csr" && mode !== "exported") fail(`--mode ${mode} must be csr or exported`);
    const vault = connectVault(vaultConnectionFromConfig(config.vault));
    vaultClient = vault.client;
    source = new VaultIntermediateSource({
      client: vault.client,
      trustDomain: config.trustDomain,
      mode,
      rootMount: flags.rootMount ?? vi?.rootMount ?? "pki",
      intermediateMount: flags.intermediateMount ?? vi?.intermediateMount ?? "pki_int",
      ttlSeconds: ttl,
      keyAlgorithm,
      commonName,
      onClose: () => vault.close(),
    });
  } else fail(`--source ${flags.source} must be vault, vault-kv or local`);
  closers.defer(() => source.close());

  const opts: CaCertsOptions = await closers.unlessStartFails(async () => {
    // Follow `meshvault root rotate` (the state named by the same config as the servers').
    const store = rotationStore(
      rotationStateRef(config),
      () => {
        if (vaultClient) return vaultClient;
        const v = connectVault(vaultConnectionFromConfig(config.vault));
        closers.defer(v.close);
        return v.client;
      },
      () => loadKubeConfig({ kubeconfig: flags.kubeconfig ?? config.kubernetes?.kubeconfig }),
    );
    return {
      source,
      sink,
      tlsLayout: flags.tlsLayout ?? false,
      renewAt,
      log: caLog,
      rotation: cacertsRotation(
        store,
        flags.source === "local" ? "local" : "vault-intermediate",
        config.rotation.pollInterval * 1000,
        caLog,
      ),
    };
  });

  if (flags.once) {
    try {
      const r = await syncCaCerts(opts);
      caLog.info(
        {
          sink: sink.description,
          action: r.action,
          write: r.write,
          notAfter: r.notAfter.toISOString(),
          renewAt: r.renewAt.toISOString(),
          ...(r.plan ? { rotation: r.plan } : {}),
        },
        r.action === "issued" ? "new intermediate written" : "current intermediate kept",
      );
    } finally {
      await closers.closeOrThrow();
    }
    return;
  }
  await closers.unlessStartFails(async () => {
    const runner = runCaCerts(opts);
    closers.defer(() => runner.stop());
  });
  await untilClosed(log, () => closers.closeOrThrow());
}

/** Runs until SIGINT/SIGTERM, then closes (within the shutdown deadline) and returns. */
function untilClosed(log: ShutdownOptions["log"], close: () => Promise<void>): Promise<void> {
  // The work may hang only on unref'd timers (the vault-kv poll): keep the process up.
  const keepAlive = setInterval(() => {}, 2 ** 30);
  return new Promise<void>((resolve) => {
    const off = closeOnSignal({
      log,
      close: () => {
        clearInterval(keepAlive);
        return close();
      },
      exit: (code) => {
        off();
        if (code === 0) resolve();
        else process.exit(code);
      },
    });
  });
}
