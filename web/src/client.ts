import { applyBalanceEvent, balancesFromResponse, parseBalanceEvent } from "./balance";
import { BACKOFF_DEFAULT, backoffDelayMs, type BackoffOptions } from "./backoff";
import { CreditsError, errorFrom } from "./errors";
import { SseParser } from "./sse";
import { tokenExpiresSoon } from "./token";
import type {
  Balances,
  CheckoutRequest,
  CheckoutSession,
  Quote,
  StreamStatus,
} from "./types";

// A token this close to its expiry is refreshed before a connection uses it: the server
// checks it once, when the stream opens, and a request takes a moment to get there.
const TOKEN_REFRESH_MARGIN_MS = 10_000;
// What the API's `retry:` says today (api/sse.py RECONNECT_MS), until the stream says it.
const SERVER_RETRY_MS_DEFAULT = 2_000;

export interface CreditsClientOptions {
  /** The account whose balance this client reads. */
  accountId: string;
  /** An account token (`cmt_...`) from your backend (POST /v1/accounts/{id}/tokens). */
  token?: string;
  /** Asked for a fresh token when the current one expires or is refused (401). */
  onTokenExpired?: () => Promise<string>;
  /** Where creditmeter's /v1 routes are, e.g. "https://credits.example.com"; "" is this
   * page's origin (creditmeter behind the same reverse proxy as the app). */
  baseUrl?: string;
  /** Your own backend, which prices and sells with its API key: quote GETs
   * `${backendUrl}${quotePath}?credit_type=&credits=`, checkout POSTs JSON to checkoutPath. */
  backendUrl?: string;
  quotePath?: string;
  checkoutPath?: string;
  backoff?: BackoffOptions;
  fetch?: typeof fetch;
  random?: () => number;
  now?: () => number;
}

export interface SubscribeOptions {
  /** The stream's state; while reconnecting, why and in how many ms (e.g. for "retrying in 4 s"). */
  onStatus?: (status: StreamStatus, error?: unknown, retryInMs?: number) => void;
}

export interface CheckoutOptions {
  /** Send the browser to the session's URL (the default). */
  redirect?: boolean;
  /** Where the redirect goes; window.location.assign by default. */
  navigate?: (url: string) => void;
}

/** creditmeter for plain TypeScript: a live balance, quotes and checkout. No React. */
export class CreditsClient {
  readonly accountId: string;
  private token: string | undefined;
  private readonly options: CreditsClientOptions;
  private readonly fetchFn: typeof fetch;
  private refreshing: Promise<string> | null = null;

  constructor(options: CreditsClientOptions) {
    this.options = options;
    this.accountId = options.accountId;
    this.token = options.token;
    this.fetchFn = options.fetch ?? ((input, init) => globalThis.fetch(input, init));
  }

  /** The token the next request or (re)connection sends, e.g. a newer one the page got. */
  setToken(token: string): void {
    this.token = token;
  }

  private accountUrl(route: "balance" | "events"): string {
    const base = (this.options.baseUrl ?? "").replace(/\/$/, "");
    return `${base}/v1/accounts/${encodeURIComponent(this.accountId)}/${route}`;
  }

  private backendUrl(path: string): string {
    return `${(this.options.backendUrl ?? "").replace(/\/$/, "")}${path}`;
  }

  /** A fresh token from onTokenExpired; concurrent callers share one request. */
  async refreshToken(): Promise<string> {
    const refresh = this.options.onTokenExpired;
    if (!refresh) throw new CreditsError(401, {}, "the account token expired and no onTokenExpired was given");
    this.refreshing ??= refresh().finally(() => {
      this.refreshing = null;
    });
    this.token = await this.refreshing;
    return this.token;
  }

  private async currentToken(): Promise<string | undefined> {
    const now = (this.options.now ?? Date.now)();
    if (this.token && this.options.onTokenExpired && tokenExpiresSoon(this.token, now, TOKEN_REFRESH_MARGIN_MS)) {
      return this.refreshToken();
    }
    if (!this.token && this.options.onTokenExpired) return this.refreshToken();
    return this.token;
  }

  /** A request with the token; on 401 it refreshes the token once and tries again. */
  private async withToken(url: string, init: RequestInit = {}): Promise<Response> {
    const send = (token: string | undefined) =>
      this.fetchFn(url, {
        ...init,
        headers: { ...(init.headers as Record<string, string>), ...this.authHeader(token) },
      });
    const res = await send(await this.currentToken());
    if (res.status !== 401 || !this.options.onTokenExpired) return res;
    await res.body?.cancel();
    return send(await this.refreshToken());
  }

  /** The account's balances now (GET /v1/accounts/{id}/balance). */
  async balance(): Promise<Balances> {
    const res = await this.withToken(this.accountUrl("balance"));
    if (!res.ok) throw await errorFrom(res);
    return balancesFromResponse(await res.json());
  }

  /**
   * Calls onBalance with every wallet's state as the stream reports it (first a snapshot of
   * each wallet, then every change) until the returned function is called. A dropped
   * connection is reopened with backoff; a refused token is refreshed through
   * onTokenExpired. A 403 (a token of another account) or 404 ends it: status "failed".
   */
  subscribe(onBalance: (balances: Balances) => void, options: SubscribeOptions = {}): () => void {
    const controller = new AbortController();
    void this.stream(onBalance, options, controller.signal);
    return () => controller.abort();
  }

  private async stream(
    onBalance: (balances: Balances) => void,
    options: SubscribeOptions,
    signal: AbortSignal,
  ): Promise<void> {
    const status = (s: StreamStatus, error?: unknown, retryInMs?: number) => {
      if (!signal.aborted || s === "closed") options.onStatus?.(s, error, retryInMs);
    };
    let balances: Balances = {};
    let failures = 0; // connections in a row that failed before their first event
    let serverRetryMs = SERVER_RETRY_MS_DEFAULT;
    // One refresh per attempt: a fresh token refused too is a failure, and backs off first.
    let refreshedAfter401 = false;
    status("connecting");
    while (!signal.aborted) {
      let waitMs: number;
      try {
        const res = await this.fetchFn(this.accountUrl("events"), {
          headers: { Accept: "text/event-stream", ...this.authHeader(await this.currentToken()) },
          signal,
          cache: "no-store",
        });
        if (res.status === 401 && this.options.onTokenExpired && !refreshedAfter401) {
          await res.body?.cancel();
          refreshedAfter401 = true;
          await this.refreshToken();
          continue;
        }
        if (!res.ok || !res.body) {
          const error = await errorFrom(res);
          if (res.status === 403 || res.status === 404 || (res.status === 401 && !this.options.onTokenExpired)) {
            status("failed", error);
            return;
          }
          throw error;
        }
        status("open");
        const parser = new SseParser();
        const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          const feed = parser.feed(value);
          if (feed.retryMs !== undefined) serverRetryMs = feed.retryMs;
          for (const e of feed.events) {
            const event = e.event === "balance" ? parseBalanceEvent(e.data) : null;
            if (!event) continue;
            failures = 0;
            balances = applyBalanceEvent(balances, event);
            onBalance(balances);
          }
        }
        // The server ended the stream (hourly, or it fell behind): come back as it asked.
        waitMs = serverRetryMs;
      } catch (error) {
        if (signal.aborted) break;
        const retryAfterS = error instanceof CreditsError ? error.retryAfterS : null;
        waitMs =
          retryAfterS !== null
            ? retryAfterS * 1000
            : backoffDelayMs(failures, this.options.backoff ?? BACKOFF_DEFAULT, this.options.random);
        failures += 1;
        status("reconnecting", error, waitMs);
        await sleep(waitMs, signal);
        refreshedAfter401 = false;
        continue;
      }
      status("reconnecting", undefined, waitMs);
      await sleep(waitMs, signal);
    }
    status("closed");
  }

  private authHeader(token: string | undefined): Record<string, string> {
    return token ? { Authorization: `Bearer ${token}` } : {};
  }

  /** The price of `credits` of a credit type with the account's plan discount, from the
   * app's backend (which asks GET /v1/prices/quote with its key and the account). */
  async quote(creditType: string, credits: number, signal?: AbortSignal): Promise<Quote> {
    const query = new URLSearchParams({ credit_type: creditType, credits: String(credits) });
    const res = await this.fetchFn(`${this.backendUrl(this.options.quotePath ?? QUOTE_PATH)}?${query}`, {
      headers: { Accept: "application/json" },
      signal,
    });
    if (!res.ok) throw await errorFrom(res);
    return (await res.json()) as Quote;
  }

  /** Asks the app's backend for a Stripe Checkout session (it calls POST
   * /v1/checkout/sessions with its key) and sends the browser to its URL. */
  async checkout(request: CheckoutRequest, options: CheckoutOptions = {}): Promise<CheckoutSession> {
    const body =
      "packId" in request
        ? { pack_id: request.packId }
        : { credit_type: request.creditType, credits: request.credits };
    const res = await this.fetchFn(this.backendUrl(this.options.checkoutPath ?? CHECKOUT_PATH), {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify(body),
    });
    if (!res.ok) throw await errorFrom(res);
    const session = (await res.json()) as CheckoutSession;
    if (typeof session.url !== "string" || !/^https?:\/\//.test(session.url)) {
      throw new CreditsError(502, {}, "the checkout endpoint answered without a session url");
    }
    if (options.redirect ?? true) (options.navigate ?? ((url) => window.location.assign(url)))(session.url);
    return session;
  }
}

/** The app backend's routes the kit calls by default (examples/web/server.py has both). */
export const QUOTE_PATH = "/api/credits/quote";
export const CHECKOUT_PATH = "/api/credits/checkout";

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const timer = setTimeout(done, ms);
    signal.addEventListener("abort", done, { once: true });
    function done() {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    }
  });
}
