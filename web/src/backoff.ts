/** How long to wait before reconnecting a dropped balance stream. */

export interface BackoffOptions {
  /** The first wait, in ms. */
  baseMs: number;
  /** No wait is longer than this, in ms. */
  maxMs: number;
}

// The first retry comes quickly (a deploy restarting the API); after a few failures a page
// waits up to half a minute, so a thousand open tabs do not hammer an API that is down.
export const BACKOFF_DEFAULT: BackoffOptions = { baseMs: 500, maxMs: 30_000 };

/**
 * The wait before reconnect number `attempt` (0 for the first) in ms: doubling from baseMs
 * up to maxMs, with "equal jitter" (between half and all of it) so pages dropped together
 * do not all come back in the same millisecond.
 */
export function backoffDelayMs(
  attempt: number,
  options: BackoffOptions = BACKOFF_DEFAULT,
  random: () => number = Math.random,
): number {
  const ceilingMs = Math.min(options.maxMs, options.baseMs * 2 ** Math.max(0, attempt));
  return Math.round(ceilingMs / 2 + random() * (ceilingMs / 2));
}
