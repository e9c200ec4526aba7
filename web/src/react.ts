/**
 * React hooks over CreditsClient: `useCredits` for the live balance in a header,
 * `useBuyCredits` for a "buy credits" form. React is a peer dependency of this entry only.
 */
import { useCallback, useEffect, useMemo, useRef, useState } from "react";

import { CreditsClient, type CheckoutOptions } from "./client";
import type { BackoffOptions } from "./backoff";
import type { Balances, CheckoutSession, Quote, StreamStatus } from "./types";

export interface UseCreditsOptions {
  /** The account token from your backend. A new value is used at the next (re)connect. */
  token?: string;
  /** Where creditmeter's /v1 routes are; "" (the default) is this page's origin. */
  baseUrl?: string;
  /** Returns a fresh token when the current one expires or is refused. */
  onTokenExpired?: () => Promise<string>;
  backoff?: BackoffOptions;
}

export interface UseCredits {
  /** Wallets by credit type; empty until the first event. */
  balances: Balances;
  status: StreamStatus;
  /** Why the stream is reconnecting or failed. */
  error: unknown;
  /** True until the first snapshot arrived. */
  loading: boolean;
}

/** The account's live balances over the SSE route, reconnecting with backoff. */
export function useCredits(accountId: string | null | undefined, options: UseCreditsOptions = {}): UseCredits {
  const [state, setState] = useState<UseCredits>({ balances: {}, status: "connecting", error: null, loading: true });
  // The latest token and callback, read at each (re)connect: a new token or an inline
  // callback must not tear down a live stream.
  const latest = useRef(options);
  latest.current = options;
  const { baseUrl, token } = options;
  const client = useRef<CreditsClient | null>(null);

  useEffect(() => {
    if (!accountId) return undefined;
    setState({ balances: {}, status: "connecting", error: null, loading: true });
    const created = new CreditsClient({
      accountId,
      baseUrl,
      token: latest.current.token,
      backoff: latest.current.backoff,
      onTokenExpired: () => {
        const refresh = latest.current.onTokenExpired;
        return refresh ? refresh() : Promise.reject(new Error("the account token expired"));
      },
    });
    client.current = created;
    const stop = created.subscribe((balances) => setState((s) => ({ ...s, balances, loading: false })), {
      onStatus: (status, error) => setState((s) => ({ ...s, status, error: error ?? null })),
    });
    return () => {
      stop();
      client.current = null;
    };
  }, [accountId, baseUrl]);

  useEffect(() => {
    if (token) client.current?.setToken(token);
  }, [token]);

  return state;
}

export interface UseBuyCreditsOptions {
  /** Your backend's origin; "" (the default) is this page's. */
  backendUrl?: string;
  quotePath?: string;
  checkoutPath?: string;
  /** Passed to CreditsClient.checkout, e.g. a navigate function in tests. */
  checkout?: CheckoutOptions;
}

export interface UseBuyCredits {
  /** The price of `credits` with the account's plan discount; null while loading or on error. */
  quote: Quote | null;
  loading: boolean;
  error: Error | null;
  /** Creates the checkout session through your backend and goes to Stripe. */
  checkout: () => Promise<CheckoutSession | null>;
  checkingOut: boolean;
}

/** A quote for `credits` of `creditType`, refreshed when either changes, and checkout. */
export function useBuyCredits(creditType: string, credits: number, options: UseBuyCreditsOptions = {}): UseBuyCredits {
  const { backendUrl, quotePath, checkoutPath } = options;
  const client = useMemo(
    // The account is the backend's business (its session knows the user): not needed here.
    () => new CreditsClient({ accountId: "", backendUrl, quotePath, checkoutPath }),
    [backendUrl, quotePath, checkoutPath],
  );
  const [quote, setQuote] = useState<Quote | null>(null);
  const [loading, setLoading] = useState(true);
  const [error, setError] = useState<Error | null>(null);
  const [checkingOut, setCheckingOut] = useState(false);
  const checkoutOptions = useRef(options.checkout);
  checkoutOptions.current = options.checkout;

  useEffect(() => {
    const controller = new AbortController();
    setLoading(true);
    setError(null);
    setQuote(null);
    client.quote(creditType, credits, controller.signal).then(
      (q) => {
        setQuote(q);
        setLoading(false);
      },
      (e: unknown) => {
        if (controller.signal.aborted) return; // a newer quote replaced this one
        setError(e instanceof Error ? e : new Error(String(e)));
        setLoading(false);
      },
    );
    return () => controller.abort();
  }, [client, creditType, credits]);

  const checkout = useCallback(async () => {
    setCheckingOut(true);
    setError(null);
    try {
      return await client.checkout({ creditType, credits }, checkoutOptions.current);
    } catch (e) {
      setError(e instanceof Error ? e : new Error(String(e)));
      return null;
    } finally {
      setCheckingOut(false);
    }
  }, [client, creditType, credits]);

  return { quote, loading, error, checkout, checkingOut };
}
