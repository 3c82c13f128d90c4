// The one redaction helper: secrets (tokens, secret_ids, JWTs) are replaced in any text that
// may echo them (Vault's error bodies, library errors about a caller's token), as a last line
// of defence. A long secret is replaced wherever it occurs. A short one (a mistyped or test
// token) only where it stands on its own: replacing "ab" everywhere would turn "table" into
// "t[redacted]le" and make the message useless, while the secret inside another word is not
// shown as itself.

/** Secrets at least this long cannot occur by accident and are replaced anywhere. */
const ANYWHERE_MIN = 12;
/** Characters tokens are made of (base64url, base64, JWT dots, UUID dashes). */
const TOKEN_CHAR = "A-Za-z0-9._~+/=-";

/** `text` with every secret in `secrets` replaced by `replacement`. */
export function redactSecrets(
  text: string,
  secrets: Iterable<string | undefined>,
  replacement = "[redacted]",
): string {
  // Longest first, so a secret that contains another is replaced whole.
  const list = [...new Set([...secrets].filter((s): s is string => !!s))].sort((a, b) => b.length - a.length);
  let out = text;
  for (const s of list) {
    if (s.length >= ANYWHERE_MIN) {
      out = out.split(s).join(replacement);
      continue;
    }
    const escaped = s.replace(/[.*+?^${}()|[\]\\/-]/g, "\\$&");
    out = out.replace(new RegExp(`(?<![${TOKEN_CHAR}])${escaped}(?![${TOKEN_CHAR}])`, "g"), replacement);
  }
  return out;
}
