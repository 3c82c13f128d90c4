// How the demo gets its signing authority. The default is the embedded `local`
// authority; a Vault-backed provider (seed 000's mode: dev Vault configured by
// `vault setup`) plugs in here without the demo knowing Vault.

export interface DemoAuthorityContext {
  /** Temporary directory owned by the demo; removed at the end. */
  workDir: string;
  trustDomain: string;
  print(line: string): void;
}

export interface PreparedAuthority {
  /** The server config's `authority` section (validated by the server's schema). */
  authority: Record<string, unknown>;
  /** One line for the demo's output, e.g. "Vault (OpenBao dev server) pki/sign/istio". */
  description: string;
  /** Extra server config overrides (dotted paths), e.g. Vault address settings. */
  serverOverrides?: Record<string, unknown>;
  /** Stops whatever the provider started (a dev Vault). Always called. */
  cleanup(): Promise<void>;
}

export interface DemoAuthorityProvider {
  /** Name used by `meshvault demo --authority <name>`, e.g. `vault`. */
  name: string;
  /** True when the tools it needs are installed (e.g. `bao` or `vault` on PATH). */
  available(): Promise<boolean>;
  prepare(ctx: DemoAuthorityContext): Promise<PreparedAuthority>;
}

const providers = new Map<string, DemoAuthorityProvider>();

/** Called by the module that implements a provider (e.g. src/demo/vault.ts) when it is imported. */
export function registerDemoAuthority(p: DemoAuthorityProvider): void {
  providers.set(p.name, p);
}

export function demoAuthority(name: string): DemoAuthorityProvider | undefined {
  return providers.get(name);
}

export function demoAuthorities(): DemoAuthorityProvider[] {
  return [...providers.values()];
}

export const localAuthority: DemoAuthorityProvider = {
  name: "local",
  available: async () => true,
  prepare: async () => ({
    authority: { type: "local" },
    description: "embedded local authority (self-signed root + intermediate in a temp dir)",
    cleanup: async () => {},
  }),
};
registerDemoAuthority(localAuthority);
