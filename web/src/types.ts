/** The shapes the creditmeter API and an app's backend answer with (SPEC §7, README). */

/** One credit type's wallet: what can be spent now, what holds reserve, and their sum. */
export interface Wallet {
  creditType: string;
  available: number;
  held: number;
  balance: number;
}

/** Wallets by credit type. */
export type Balances = Record<string, Wallet>;

/** A `balance` event of GET /v1/accounts/{id}/events; entryId is null in the snapshot the
 * stream sends first, and the journal entry's id for a change. */
export interface BalanceEvent extends Wallet {
  entryId: string | null;
}

/** GET /v1/prices/quote's answer: amounts in the currency's minor units. */
export interface Quote {
  credit_type: string;
  credits: number;
  subtotal: number;
  discount_percent: number;
  discount: number;
  amount: number;
  currency: string;
  plan: string | null;
  breakdown: Array<Record<string, number | string | null>>;
}

/** What to buy: a custom amount of a credit type, or a pack. */
export type CheckoutRequest = { creditType: string; credits: number } | { packId: string };

/** What the app's checkout endpoint answers (POST /v1/checkout/sessions passes it on). */
export interface CheckoutSession {
  id?: string;
  url: string;
  amount?: number | null;
  currency?: string | null;
  mode?: string;
}

/** Where the live stream is. */
export type StreamStatus = "connecting" | "open" | "reconnecting" | "closed" | "failed";
