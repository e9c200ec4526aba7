import { describe, expect, it } from "vitest";

import { tokenExpiresAtMs, tokenExpiresSoon } from "../src/token";

// Built as api/tokens.py builds one: cmt_ + base64url(JSON claims) without padding + "." + sig.
function token(claims: object): string {
  const body = Buffer.from(JSON.stringify(claims)).toString("base64url");
  return `cmt_${body}.c2lnbmF0dXJl`;
}

describe("account token expiry", () => {
  it("reads the expiry from the claims", () => {
    expect(tokenExpiresAtMs(token({ a: "user_1", e: 1_800_000_000_123 }))).toBe(1_800_000_000_123);
  });

  it("is null for an API key, a token without a signature part, or claims that are not JSON", () => {
    expect(tokenExpiresAtMs("cm_live_abc")).toBeNull();
    expect(tokenExpiresAtMs("cmt_abc")).toBeNull();
    expect(tokenExpiresAtMs("cmt_%%%.sig")).toBeNull();
    expect(tokenExpiresAtMs(token({ a: "user_1", e: "soon" }))).toBeNull();
  });

  it("expires soon within the margin, or when already expired; not otherwise", () => {
    const t = token({ a: "user_1", e: 100_000 });
    expect(tokenExpiresSoon(t, 50_000, 10_000)).toBe(false);
    expect(tokenExpiresSoon(t, 90_000, 10_000)).toBe(true);
    expect(tokenExpiresSoon(t, 200_000, 10_000)).toBe(true);
    expect(tokenExpiresSoon("cm_live_abc", 200_000, 10_000)).toBe(false);
  });
});
