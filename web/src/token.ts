/**
 * Account tokens (`cmt_<base64url claims>.<signature>`, api/tokens.py) carry their expiry in
 * the claims ({"a": account, "e": expires_at_ms}); reading it lets a client ask for a fresh
 * token before it connects with one that is about to be refused.
 */

/** When the token expires (ms since the epoch), or null when it is not an account token. */
export function tokenExpiresAtMs(token: string): number | null {
  if (!token.startsWith("cmt_")) return null;
  const dot = token.lastIndexOf(".");
  if (dot === -1) return null;
  const body = token.slice("cmt_".length, dot).replace(/-/g, "+").replace(/_/g, "/");
  try {
    const claims: unknown = JSON.parse(atob(body + "=".repeat((4 - (body.length % 4)) % 4)));
    if (typeof claims === "object" && claims !== null && "e" in claims) {
      const e = (claims as { e: unknown }).e;
      return Number.isInteger(e) ? (e as number) : null;
    }
  } catch {
    return null; // not base64 or not JSON: the server will say 401, and we refresh then
  }
  return null;
}

/** Whether the token expires within `marginMs` of `nowMs` (an expired one does too). */
export function tokenExpiresSoon(token: string, nowMs: number, marginMs: number): boolean {
  const expiresAtMs = tokenExpiresAtMs(token);
  return expiresAtMs !== null && expiresAtMs - nowMs <= marginMs;
}
