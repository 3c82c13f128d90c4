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
  /** Stop renewal timers and close keep-alive sockets. */
  close(): void;
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
    close: () => {
      // The login or renewal in flight is aborted at once; its end need not be waited for.
      void tokens.close();
      client.close();
    },
  };
}
