import type { BalanceEvent, Balances, Wallet } from "./types";

const AMOUNTS = ["available", "held", "balance"] as const;

/** A `balance` event's data (api/sse.py's JSON) as a BalanceEvent, or null when it is not
 * one: a page must not show NaN credits because a proxy mangled a frame. */
export function parseBalanceEvent(data: string): BalanceEvent | null {
  let raw: unknown;
  try {
    raw = JSON.parse(data);
  } catch {
    return null;
  }
  if (typeof raw !== "object" || raw === null) return null;
  const r = raw as Record<string, unknown>;
  if (typeof r.credit_type !== "string" || r.credit_type === "") return null;
  if (!AMOUNTS.every((k) => Number.isSafeInteger(r[k]))) return null;
  if (r.entry_id !== null && typeof r.entry_id !== "string") return null;
  return {
    creditType: r.credit_type,
    available: r.available as number,
    held: r.held as number,
    balance: r.balance as number,
    entryId: r.entry_id,
  };
}

/** The balances after an event: a new object, so React sees the change. */
export function applyBalanceEvent(balances: Balances, event: BalanceEvent): Balances {
  const wallet: Wallet = {
    creditType: event.creditType,
    available: event.available,
    held: event.held,
    balance: event.balance,
  };
  return { ...balances, [event.creditType]: wallet };
}

/** GET /v1/accounts/{id}/balance's `balances` list as Balances. */
export function balancesFromResponse(body: unknown): Balances {
  let out: Balances = {};
  const rows = (body as { balances?: unknown }).balances;
  if (!Array.isArray(rows)) return out;
  for (const row of rows) {
    const event = parseBalanceEvent(JSON.stringify({ ...row, entry_id: null }));
    if (event) out = applyBalanceEvent(out, event);
  }
  return out;
}
