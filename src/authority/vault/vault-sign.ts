// The `vault-sign` authority (seed 000): every CSR is signed by Vault at
// `POST <mount>/sign/<role>`, with the caller's SPIFFE ID as `uri_sans`. meshvault
// only authenticates the caller and checks what Vault returns.
//
// identity: server   -> meshvault's own Vault login signs for everyone.
// identity: workload -> the caller's bearer token logs in to Vault on a kubernetes/jwt
//                       role and that Vault token signs, so Vault's policies authorize
//                       each workload. The server's own serving certificate (the only
//                       request with DNS/IP SANs) still uses meshvault's login.
import { isSelfSigned, type Certificate } from "../../pki/certificate.js";
import { verifyChain } from "../../pki/chain.js";
import { CsrError } from "../../pki/csr.js";
import { encodePem } from "../../pki/pem.js";
import type { SpiffeId } from "../../pki/spiffe.js";
import { abortable } from "../../timing/clock.js";
import {
  VaultAuthError,
  VaultBadRequestError,
  VaultError,
  VaultPermissionDeniedError,
  type ConnectedVault,
  type VaultClient,
} from "../../vault/index.js";
import { servingRoleName } from "../../vault/setup/access.js";
import {
  AuthorityDeniedError,
  AuthorityUnavailableError,
  type Authority,
  type IssuedChain,
  type Readiness,
  type SignRequest,
} from "../authority.js";
import {
  certKey,
  checkIssued,
  checkPkiMount,
  parseAll,
  readMountChain,
  readIssuerRoots,
  readMountRoots,
  silentLog,
  toAuthorityError,
  type VaultAuthorityLog,
} from "./common.js";
import { WorkloadTokenCache } from "./workload-tokens.js";

export interface VaultSignAuthorityOptions {
  vault: ConnectedVault;
  /** PKI mount, e.g. "pki_int". */
  mount: string;
  /** PKI role at `<mount>/roles/<role>`. */
  role: string;
  identity: "server" | "workload";
  /** Required for identity: workload. */
  workloadAuth?: { method: "kubernetes" | "jwt"; mount: string; role: string } | undefined;
  excludeCnFromSans: boolean;
  log?: VaultAuthorityLog;
  /** Re-read the trust bundle this often. Default 5 min. */
  rootsRefreshMs?: number;
  /**
   * Sign with this issuer of the mount (`<mount>/issuer/<issuer>/sign/<role>`, a root rotation's
   * new root) instead of the mount's default; the trust bundle is then that issuer's root.
   */
  issuer?: string | undefined;
  /** Bound on cached per-workload Vault tokens. Default 10000. */
  workloadTokenCacheSize?: number;
  /** Close `vault` on close(). Default true. */
  ownsVault?: boolean;
  /** How often readiness is probed (sys/health + the login's capabilities on the sign path). Default 2 s. */
  probeIntervalMs?: number;
  /** A probe without an answer after this long counts as failed. Default 3 s. */
  probeTimeoutMs?: number;
}

/** `data` of `<mount>/sign/<role>`; `expiration` is a string in Vault's docs and an integer in OpenBao. */
export interface VaultSignResponse {
  certificate?: string;
  issuing_ca?: string;
  ca_chain?: string[] | null;
  serial_number?: string;
  expiration?: string | number;
}

const READY: Readiness = { ready: true, detail: "Vault answers and the login may sign" };
const NOT_STARTED: Readiness = { ready: false, reason: "not started" };
const DEFAULT_ROOTS_REFRESH_MS = 5 * 60_000;
const DEFAULT_PROBE_INTERVAL_MS = 2000;
const DEFAULT_PROBE_TIMEOUT_MS = 3000;
// sys/health answers these for a Vault that is up but not active (standby, DR/perf
// secondary), not initialised (501) or sealed (503).
const HEALTH_STATUSES = [429, 472, 473, 501, 503];

export class VaultSignAuthority implements Authority {
  readonly kind = "vault-sign";
  private roots: Certificate[] = [];
  private rootsPem: string[] = [];
  private readyState: Readiness = NOT_STARTED;
  private readonly client: VaultClient;
  private readonly signPath: string;
  /** Where meshvault's own login signs its serving certificate (its own role with identity: workload). */
  private readonly servingSignPath: string;
  private readonly what: string;
  private readonly log: VaultAuthorityLog;
  private readonly workloadTokens: WorkloadTokenCache | undefined;
  /** Intermediates (PEM, leaf's issuer first) verified up to the roots, by the chain text Vault sent. */
  private readonly verifiedChains = new Map<string, string[]>();
  private refreshTimer: NodeJS.Timeout | undefined;
  private refreshing: Promise<void> | undefined;
  private probeTimer: NodeJS.Timeout | undefined;
  private checking: Promise<void> | undefined;
  private probing: Promise<void> | undefined;
  private closed = false;

  constructor(private readonly opts: VaultSignAuthorityOptions) {
    this.client = opts.vault.client;
    const at = opts.issuer ? `${opts.mount}/issuer/${opts.issuer}` : opts.mount;
    this.signPath = `${at}/sign/${opts.role}`;
    this.servingSignPath =
      opts.identity === "workload" ? `${at}/sign/${servingRoleName(opts.role)}` : this.signPath;
    this.what = `Vault role "${opts.role}" at ${opts.mount} (${this.client.address})`;
    this.log = opts.log ?? silentLog;
    if (opts.identity === "workload") {
      if (!opts.workloadAuth)
        throw new Error(
          "vault-sign with identity: workload needs workloadAuth {method, mount, role}: the Vault role callers log in to",
        );
      this.workloadTokens = new WorkloadTokenCache(this.client, {
        ...opts.workloadAuth,
        ...(opts.workloadTokenCacheSize !== undefined ? { maxEntries: opts.workloadTokenCacheSize } : {}),
      });
    }
  }

  async start(signal?: AbortSignal): Promise<void> {
    const { client, tokens } = this.opts.vault;
    try {
      // The login is shared (it cannot take this signal); stop waiting for it on abort.
      await abortable(tokens.start(), signal);
    } catch (err) {
      if (signal?.aborted) throw err;
      throw toAuthorityError(err, `vault-sign: cannot log in to Vault at ${client.address}`);
    }
    try {
      await checkPkiMount(client, this.opts.mount, "authority.mount", signal);
    } catch (err) {
      if (signal?.aborted) throw err;
      throw toAuthorityError(err, `vault-sign: checking the mount ${this.opts.mount}`);
    }
    await this.checkSignCapability(signal);
    try {
      await this.loadRoots(signal);
      // The mount's own issuing CA must lead to those roots, or every leaf would be useless
      // (a named issuer is a root itself: readIssuerRoots checked that).
      const chain = this.opts.issuer ? [] : await readMountChain(client, this.opts.mount, signal);
      const below = chain.filter((c) => !isSelfSigned(c));
      if (below.length > 0) verifyChain(below[0]!, below.slice(1), this.roots);
    } catch (err) {
      if (signal?.aborted) throw err;
      if (err instanceof VaultError)
        throw toAuthorityError(err, `vault-sign: reading the CA of ${this.opts.mount}`);
      if (err instanceof AuthorityDeniedError || err instanceof AuthorityUnavailableError) throw err;
      throw new AuthorityDeniedError(
        `vault-sign: the CA of ${this.opts.mount} on Vault at ${client.address} does not chain to a root Vault publishes: ${(err as Error).message}`,
        { cause: err },
      );
    }
    this.setReadiness(READY);
    this.log.info(
      {
        vault: client.address,
        signPath: this.signPath,
        identity: this.opts.identity,
        mount: this.opts.mount,
        roots: this.roots.length,
      },
      "vault-sign: signing at Vault; trust bundle read from the mount",
    );
    const every = this.opts.rootsRefreshMs ?? DEFAULT_ROOTS_REFRESH_MS;
    this.refreshTimer ??= setInterval(() => void this.refreshRoots(), every);
    this.refreshTimer.unref();
    this.probeTimer ??= setInterval(
      () => void this.probe(),
      this.opts.probeIntervalMs ?? DEFAULT_PROBE_INTERVAL_MS,
    );
    this.probeTimer.unref();
  }

  /**
   * Checks now whether Vault would sign for us: Vault up, unsealed and initialised
   * (sys/health), our login valid (logging in again when Vault revoked the token) and allowed
   * to sign (sys/capabilities-self on the sign path). Updates ready(); never throws.
   */
  probe(): Promise<void> {
    this.probing ??= this.probeOnce().finally(() => (this.probing = undefined));
    return this.probing;
  }

  private async probeOnce(): Promise<void> {
    const ms = this.opts.probeTimeoutMs ?? DEFAULT_PROBE_TIMEOUT_MS;
    // A hung check is not started again: later probes wait on the same one, each with its own timeout.
    const check = (this.checking ??= this.checkCanSign().finally(() => (this.checking = undefined)));
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () =>
          reject(
            new AuthorityUnavailableError(
              `Vault at ${this.client.address} did not answer within ${ms} ms: is it overloaded or unreachable? Check VAULT_ADDR and the network`,
            ),
          ),
        ms,
      );
      timer.unref();
    });
    try {
      await Promise.race([check, timeout]);
      if (!this.closed) this.setReadiness(READY);
    } catch (err) {
      if (!this.closed) this.setReadiness(this.notReady(err));
    } finally {
      clearTimeout(timer);
    }
  }

  private async checkCanSign(): Promise<void> {
    const health = await this.client.requestRaw("GET", "sys/health", undefined, {
      noAuth: true,
      maxAttempts: 1,
      acceptStatus: HEALTH_STATUSES,
    });
    if (health.status === 503)
      throw new AuthorityUnavailableError(
        `Vault at ${this.client.address} is sealed: unseal it (bao operator unseal / vault operator unseal); meshvault turns ready by itself`,
      );
    if (health.status === 501)
      throw new AuthorityUnavailableError(
        `Vault at ${this.client.address} is not initialised: initialise and unseal it (bao operator init)`,
      );
    // Our own login: a revoked or expired token makes the client log in again, and a refused
    // login surfaces here with what to check. It signs at the serving path (the workload path
    // itself with identity: server).
    const r = await this.client.write<Record<string, string[]>>(
      "sys/capabilities-self",
      { paths: [this.servingSignPath] },
      { maxAttempts: 1 },
    );
    const caps = r?.data?.[this.servingSignPath] ?? r?.data?.["capabilities"];
    if (Array.isArray(caps)) {
      const missing = this.missingSignCapability(caps);
      if (missing) throw new AuthorityDeniedError(missing);
    }
  }

  private notReady(err: unknown): Readiness {
    // Vault errors already name the address, the cause and the fix, never a token.
    const msg = err instanceof Error ? err.message : String(err);
    return { ready: false, reason: `cannot sign at ${this.signPath}: ${msg}` };
  }

  private setReadiness(next: Readiness): void {
    const was = this.readyState;
    this.readyState = next;
    if (next.ready && !was.ready && was !== NOT_STARTED)
      this.log.info(
        { vault: this.client.address, signPath: this.signPath },
        "vault-sign: ready again: Vault signs",
      );
    else if (!next.ready && (was.ready || was.reason !== next.reason))
      this.log.warn({ reason: next.reason }, "vault-sign: not ready");
  }

  /** A real sign call's outcome also says whether Vault can sign right now. */
  private noteSignOutcome(err: unknown, perWorkload: boolean): void {
    if (this.readyState === NOT_STARTED) return;
    if (err === undefined) {
      if (!this.readyState.ready) this.setReadiness(READY);
      return;
    }
    const ownLogin =
      !perWorkload &&
      ((err instanceof VaultPermissionDeniedError && err.tokenInvalid) || err instanceof VaultAuthError);
    const down = err instanceof VaultError && (err.unavailable || err.retryable);
    if (!down && !ownLogin) return; // refused for this request (its CSR, its caller): not about readiness
    this.setReadiness(this.notReady(err));
    void this.probe();
  }

  /** Fail at startup, naming the path and capability, rather than at the first CSR. */
  private async checkSignCapability(signal?: AbortSignal): Promise<void> {
    let caps: string[] | undefined;
    try {
      caps = await this.client.capabilitiesSelf(this.servingSignPath, undefined, signal);
    } catch (err) {
      if (signal?.aborted) throw err;
      return; // cannot ask: the first sign will say what is wrong
    }
    if (caps === undefined) return;
    const missing = this.missingSignCapability(caps);
    if (missing) throw new AuthorityDeniedError(`vault-sign: ${missing}`);
  }

  /** What to fix when `caps` (the login's capabilities on the sign path) cannot sign; undefined when they can. */
  private missingSignCapability(caps: string[]): string | undefined {
    if (caps.some((c) => c === "update" || c === "create" || c === "root" || c === "sudo")) return undefined;
    const who =
      this.opts.identity === "workload"
        ? "meshvault's own login (it signs the CA server's serving certificate)"
        : "meshvault's Vault login";
    return (
      `permission denied on Vault at ${this.client.address}: ${who} needs the "update" capability on "${this.servingSignPath}", ` +
      `but its token has [${caps.join(", ")}] there. Add to one of its policies: path "${this.servingSignPath}" { capabilities = ["update"] }`
    );
  }

  private async loadRoots(signal?: AbortSignal): Promise<void> {
    const roots = this.opts.issuer
      ? await readIssuerRoots(this.client, this.opts.mount, this.opts.issuer, signal)
      : await readMountRoots(this.client, this.opts.mount, signal);
    const changed = roots.map(certKey).join() !== this.roots.map(certKey).join();
    if (changed && this.roots.length > 0)
      this.log.warn({ mount: this.opts.mount, roots: roots.length }, "vault-sign: the trust bundle changed");
    if (changed) this.verifiedChains.clear();
    this.roots = roots;
    this.rootsPem = roots.map((r) => r.pem);
  }

  private refreshRoots(): Promise<void> {
    this.refreshing ??= this.loadRoots()
      .catch((err: Error) => {
        if (this.closed) return; // the connection was closed under it
        this.log.warn(
          { mount: this.opts.mount, err: err.message },
          "vault-sign: cannot re-read the trust bundle (kept the current one)",
        );
      })
      .finally(() => (this.refreshing = undefined));
    return this.refreshing;
  }

  async sign(request: SignRequest, identity: SpiffeId): Promise<IssuedChain> {
    // The CSR's signature (proof of possession) is checked where it is signed: Vault checks it
    // on sign/<role> and refuses a bad one ("request signature invalid"), turned into the same
    // CsrError below. Checking it here too cost a P-256 key import and verify (~0.25 ms of
    // CPU) per certificate, a fifth of this front end (docs/benchmarks.md).
    const body: Record<string, unknown> = {
      csr: encodePem("CERTIFICATE REQUEST", request.csr.der),
      uri_sans: identity.uri,
      ttl: `${request.ttlSeconds}s`,
      exclude_cn_from_sans: this.opts.excludeCnFromSans,
      format: "pem",
    };
    if (request.commonName !== undefined) body["common_name"] = request.commonName;
    if (request.dnsNames?.length) body["alt_names"] = request.dnsNames.join(",");
    if (request.ipAddresses?.length) body["ip_sans"] = request.ipAddresses.join(",");

    const data = await this.callSign(body, request, identity);
    return this.assemble(data, identity);
  }

  private async callSign(
    body: Record<string, unknown>,
    request: SignRequest,
    identity: SpiffeId,
  ): Promise<VaultSignResponse> {
    const servingCert = Boolean(request.dnsNames?.length || request.ipAddresses?.length);
    const cache = this.workloadTokens;
    const perWorkload = cache !== undefined && !servingCert;
    if (perWorkload && !request.callerToken) {
      throw new AuthorityDeniedError(
        `vault-sign (identity: workload): ${identity.uri} did not present a bearer token, and Vault must authorize each workload ` +
          `with its own token (a client-certificate renewal cannot be authorized this way). Send the service-account token ` +
          `(authorization: Bearer ...), or use identity: server`,
      );
    }
    const what = perWorkload ? `${this.what} for ${identity.uri}` : this.what;
    for (let attempt = 1; ; attempt++) {
      let token: string | undefined;
      try {
        if (perWorkload) token = await cache.token(identity.uri, request.callerToken!);
      } catch (err) {
        throw toAuthorityError(
          err,
          `vault-sign: Vault login with the workload's own token (${this.opts.workloadAuth!.method} role "${this.opts.workloadAuth!.role}" at auth/${this.opts.workloadAuth!.mount}) for ${identity.uri}`,
        );
      }
      try {
        const path = servingCert ? this.servingSignPath : this.signPath;
        const r = await this.client.write<VaultSignResponse>(path, body, token ? { token } : {});
        if (!r?.data?.certificate)
          throw new AuthorityUnavailableError(`${what}: ${path} answered without data.certificate`);
        this.noteSignOutcome(undefined, perWorkload);
        return r.data;
      } catch (err) {
        // A cached workload token revoked or expired early: log in again once.
        if (perWorkload && attempt === 1 && err instanceof VaultPermissionDeniedError && err.tokenInvalid) {
          cache.invalidate(identity.uri, request.callerToken!);
          continue;
        }
        if (
          err instanceof VaultBadRequestError &&
          err.vaultErrors.some((e) => /request signature invalid/i.test(e))
        )
          throw new CsrError(
            `CSR signature does not verify: the request was altered or not signed by its own key (${what}: Vault said "request signature invalid")`,
          );
        this.noteSignOutcome(err, perWorkload);
        throw toAuthorityError(err, what);
      }
    }
  }

  private async assemble(data: VaultSignResponse, identity: SpiffeId): Promise<IssuedChain> {
    // Parsing certificates costs ~0.3 ms each, more than the rest of our path: the chain Vault
    // returns is the same text every time, so it is parsed and verified to the roots once per
    // distinct text, and leaves signed under a known chain are passed on as Vault sent them.
    const chainKey = `${data.issuing_ca ?? ""}\0${(data.ca_chain ?? []).join("\0")}`;
    const certificate = data.certificate!;
    const known = this.verifiedChains.get(chainKey);
    if (known && certificate.indexOf("-----BEGIN CERTIFICATE-----", 1) === -1) {
      return { leafPem: `${certificate.trim()}\n`, intermediatesPem: known, rootsPem: this.rootsPem };
    }
    let leaf: Certificate;
    let others: Certificate[];
    try {
      const certs = parseAll([certificate], `${this.signPath} certificate`);
      leaf = certs[0]!;
      others = parseAll(
        [...certs.slice(1).map((c) => c.pem), data.issuing_ca, ...(data.ca_chain ?? [])],
        `${this.signPath} ca_chain`,
      );
    } catch (err) {
      throw new AuthorityUnavailableError(
        `${this.what}: cannot parse what Vault returned: ${(err as Error).message}`,
      );
    }
    if (!leaf.sans.uris.includes(identity.uri))
      throw new AuthorityDeniedError(
        `${this.what} issued a certificate without the URI SAN ${identity.uri} (it has ${leaf.sans.uris.join(", ") || "none"}): ` +
          `set allowed_uri_sans to spiffe://${identity.trustDomain}/* on the role and do not disable URI SANs`,
      );
    const rootKeys = new Set(this.roots.map(certKey));
    const pool = others.filter((c) => !rootKeys.has(certKey(c)));
    let path: Certificate[];
    try {
      path = checkIssued(leaf, pool, this.roots, this.what);
    } catch (err) {
      // The roots may have rotated since we read them: re-read (in the background) and report.
      void this.refreshRoots();
      throw err;
    }
    const intermediatesPem = path.map((c) => c.pem);
    if (this.verifiedChains.size >= 16) this.verifiedChains.clear();
    this.verifiedChains.set(chainKey, intermediatesPem);
    return { leafPem: leaf.pem, intermediatesPem, rootsPem: this.rootsPem };
  }

  trustBundle(): string[] {
    return this.rootsPem;
  }

  ready(): Readiness {
    return this.readyState;
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.refreshTimer) clearInterval(this.refreshTimer);
    if (this.probeTimer) clearInterval(this.probeTimer);
    // Closing the connection first ends a probe or roots refresh waiting on a Vault that does not answer.
    const closing = (this.opts.ownsVault ?? true) ? this.opts.vault.close() : undefined;
    // Workload logins have their own tokens, not the connection's: closed on their own.
    this.workloadTokens?.close();
    await this.probing;
    await this.refreshing;
    await closing;
  }
}
