// The example app's page: the header shows the signed-in account's balance live (useCredits)
// and ticks down as charges are made, by this page's "Generate" button or by anything else
// that charges the account; the "Buy credits" card prices a top-up with the account's plan
// discount and sends the user to Stripe Checkout (useBuyCredits).
import { StrictMode, useEffect, useRef, useState } from "react";
import { createRoot } from "react-dom/client";

import { formatMoney, type Balances, type Wallet } from "creditmeter-web";
import { useBuyCredits, useCredits } from "creditmeter-web/react";

/** What this app's backend (examples/web/server.py) says about the signed-in user. */
interface Session {
  account_id: string;
  token: string;
  expires_at: string;
}

interface Activity {
  at: string;
  creditType: string;
  from: number;
  to: number;
}

const ACTIVITY_ROWS_MAX = 8; // the card shows the latest changes, not a ledger

async function fetchSession(): Promise<Session> {
  const res = await fetch("/api/credits/session", { method: "POST" });
  if (!res.ok) throw new Error(`sign-in failed: HTTP ${res.status}`);
  return (await res.json()) as Session;
}

function App() {
  const [session, setSession] = useState<Session | null>(null);
  const [error, setError] = useState<string | null>(null);
  useEffect(() => {
    fetchSession().then(setSession, (e: unknown) => setError(String(e)));
  }, []);
  if (!session) return <p className="notice">{error ?? "Signing in…"}</p>;
  return <Page session={session} />;
}

function Page({ session }: { session: Session }) {
  const live = useCredits(session.account_id, {
    token: session.token,
    onTokenExpired: async () => (await fetchSession()).token,
  });
  const activity = useActivity(live.balances);
  return (
    <>
      <header className="top">
        <span className="brand">Pixel Forge</span>
        <span className="account">{session.account_id}</span>
        <div className="balances" data-status={live.status}>
          <span className={`dot ${live.status}`} title={`stream ${live.status}`} />
          {live.loading ? (
            <span className="pill">…</span>
          ) : (
            Object.values(live.balances).map((w) => <BalancePill key={w.creditType} wallet={w} />)
          )}
        </div>
      </header>
      <main>
        <Generate />
        <BuyCredits />
        <section className="card">
          <h2>Balance changes</h2>
          <p className="hint">Live over the account's event stream; nothing here polls.</p>
          <table id="activity">
            <tbody>
              {activity.length === 0 ? (
                <tr>
                  <td className="empty">No change yet</td>
                </tr>
              ) : (
                activity.map((a, i) => (
                  <tr key={`${a.at}-${i}`}>
                    <td className="mono">{a.at}</td>
                    <td>{a.creditType}</td>
                    <td className="num">{a.from.toLocaleString("en")} → {a.to.toLocaleString("en")}</td>
                    <td className={`num ${a.to < a.from ? "down" : "up"}`}>
                      {a.to < a.from ? "−" : "+"}
                      {Math.abs(a.to - a.from).toLocaleString("en")}
                    </td>
                  </tr>
                ))
              )}
            </tbody>
          </table>
        </section>
      </main>
    </>
  );
}

function BalancePill({ wallet }: { wallet: Wallet }) {
  return (
    <span className="pill" data-credit-type={wallet.creditType}>
      <strong className="available" data-testid={`available-${wallet.creditType}`}>
        {wallet.available.toLocaleString("en")}
      </strong>{" "}
      {wallet.creditType.replace(/_/g, " ")}
      {wallet.held > 0 ? <span className="held"> · {wallet.held.toLocaleString("en")} held</span> : null}
    </span>
  );
}

/** The available amounts' changes, newest first, as the page saw them. */
function useActivity(balances: Balances): Activity[] {
  const previous = useRef<Balances>({});
  const [rows, setRows] = useState<Activity[]>([]);
  useEffect(() => {
    const added: Activity[] = [];
    for (const w of Object.values(balances)) {
      const before = previous.current[w.creditType];
      if (before && before.available !== w.available) {
        const at = new Date().toISOString().slice(11, 23);
        added.push({ at, creditType: w.creditType, from: before.available, to: w.available });
      }
    }
    previous.current = balances;
    if (added.length) setRows((r) => [...added, ...r].slice(0, ACTIVITY_ROWS_MAX));
  }, [balances]);
  return rows;
}

function Generate() {
  const [prompt, setPrompt] = useState("a red fox in the snow");
  const [result, setResult] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  async function generate() {
    setBusy(true);
    try {
      const res = await fetch("/api/generate", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ prompt }),
      });
      const body = (await res.json()) as { amount?: number; detail?: string };
      setResult(res.ok ? `Charged ${body.amount} credits.` : (body.detail ?? `HTTP ${res.status}`));
    } finally {
      setBusy(false);
    }
  }
  return (
    <section className="card">
      <h2>Generate an image</h2>
      <p className="hint">Each image is one IMAGE_GEN charge; the header follows.</p>
      <div className="row">
        <input value={prompt} onChange={(e) => setPrompt(e.target.value)} aria-label="prompt" />
        <button id="generate" onClick={() => void generate()} disabled={busy}>
          Generate
        </button>
      </div>
      {result ? <p className="result">{result}</p> : null}
    </section>
  );
}

function BuyCredits() {
  const [credits, setCredits] = useState(1500);
  const buy = useBuyCredits("credits", credits);
  const q = buy.quote;
  return (
    <section className="card" id="buy">
      <h2>Buy credits</h2>
      <p className="hint">Priced with your plan's discount; paid on Stripe Checkout.</p>
      <div className="row">
        <input
          id="credits"
          type="number"
          min={1}
          value={credits}
          onChange={(e) => setCredits(Number(e.target.value) || 0)}
          aria-label="credits to buy"
        />
        <span>credits</span>
      </div>
      <dl className="quote" data-loading={buy.loading}>
        {q ? (
          <>
            <dt>Subtotal</dt>
            <dd>{formatMoney(q.subtotal, q.currency)}</dd>
            {q.discount > 0 ? (
              <>
                <dt>Plan {q.plan} −{q.discount_percent}%</dt>
                <dd className="down">−{formatMoney(q.discount, q.currency)}</dd>
              </>
            ) : null}
            <dt>Total</dt>
            <dd id="quote-total">{formatMoney(q.amount, q.currency)}</dd>
          </>
        ) : (
          <dt>{buy.loading ? "Pricing…" : ""}</dt>
        )}
      </dl>
      {buy.error ? <p className="error" id="buy-error">{buy.error.message}</p> : null}
      <button id="checkout" onClick={() => void buy.checkout()} disabled={!q || buy.checkingOut}>
        {buy.checkingOut ? "Opening Stripe…" : "Checkout with Stripe"}
      </button>
    </section>
  );
}

createRoot(document.getElementById("root")!).render(
  <StrictMode>
    <App />
  </StrictMode>,
);
