import { describe, expect, it } from "vitest";

import { backoffDelayMs } from "../src/backoff";

const OPTIONS = { baseMs: 500, maxMs: 30_000 };

describe("backoffDelayMs", () => {
  it("doubles from the base with each failed attempt (top of the jitter)", () => {
    const delays = [0, 1, 2, 3, 4].map((n) => backoffDelayMs(n, OPTIONS, () => 1));
    expect(delays).toEqual([500, 1000, 2000, 4000, 8000]);
  });

  it("never waits longer than maxMs, however many attempts failed", () => {
    expect(backoffDelayMs(6, OPTIONS, () => 1)).toBe(30_000);
    expect(backoffDelayMs(1000, OPTIONS, () => 1)).toBe(30_000);
  });

  it("jitters between half and all of the ceiling", () => {
    expect(backoffDelayMs(3, OPTIONS, () => 0)).toBe(2000);
    expect(backoffDelayMs(3, OPTIONS, () => 0.5)).toBe(3000);
    for (let i = 0; i < 200; i += 1) {
      const d = backoffDelayMs(2, OPTIONS);
      expect(d).toBeGreaterThanOrEqual(1000);
      expect(d).toBeLessThanOrEqual(2000);
    }
  });
});
