// Public surface of the Vault client. Other modules import from here.

import { authMethodFromConfig, type AuthMethod } from "./auth.js";
import { VaultClient, type VaultClientOptions } from "./client.js";
import type { VaultConnection } from "./config.js";
import { VaultTokenManager, type TokenManagerOptions } from "./token-manager.js";

export * from "./auth.js";
export * from "./client.js";
export * from "./config.js";
export * from "./errors.js";
export * from "./kv.js";
export * from "./refused-logins.js";
export * from "./token-manager.js";

export interface ConnectedVault {
  client: VaultClient;
  tokens: VaultTokenManager;
  auth: AuthMethod;
  /**
   * Stops renewal timers, aborts the login or renewal in flight and closes every connection;
   * resolves once that login or renewal has ended.
   */
  close(): Promise<void>;
}

/**
 * Client + auth method + token manager wired from one VaultConnection. Does not
 * log in yet: call `tokens.start()` to fail fast at startup, or let the first
 * request log in.
 */
export function connectVault(
  connection: VaultConnection,
  options: Omit<VaultClientOptions, "token" | "tokenSource"> & { tokens?: TokenManagerOptions } = {},
): ConnectedVault {
  const client = new VaultClient(connection, options);
  const auth = authMethodFromConfig(connection.auth);
  const tokens = new VaultTokenManager(client, auth, { logger: options.logger, ...options.tokens });
  client.useTokenSource(tokens);
  return {
    client,
    tokens,
    auth,
    close: async () => {
      // Both abort at once (before the first await): the login's request and every other one.
      const stopping = tokens.close();
      client.close();
      await stopping;
    },
  };
}
