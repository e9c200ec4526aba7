// The hooks rendered by React against a loopback server: what they add to CreditsClient is
// lifecycle (one stream per account across re-renders, a new token passed on, the stream
// closed on unmount, a stale quote never shown). react-test-renderer needs no DOM, so the
// kit runs on Node's own fetch and AbortController as it runs on a browser's; it is
// deprecated, and its one deprecation line per render is kept out of the output.
import { createElement } from "react";
import { create, type ReactTestRenderer } from "react-test-renderer";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";

import { useBuyCredits, useCredits, type UseBuyCredits, type UseCredits, type UseCreditsOptions } from "../src/react";
import { closeServer, frame, json, openStream, problem, serve, until } from "./loopback";

// Async updates land outside act(): React is told this is not a test-only act() world.
(globalThis as { IS_REACT_ACT_ENVIRONMENT?: boolean }).IS_REACT_ACT_ENVIRONMENT = false;

let renderer: ReactTestRenderer | null = null;

beforeEach(() => {
  const consoleError = console.error.bind(console);
  vi.spyOn(console, "error").mockImplementation((...args: unknown[]) => {
    if (typeof args[0] === "string" && args[0].startsWith("react-test-renderer is deprecated")) return;
    consoleError(...args);
  });
});

afterEach(async () => {
  vi.restoreAllMocks();
  renderer?.unmount();
  renderer = null;
  await closeServer();
});

interface View<T, P> {
  latest: () => T;
  /** Renders again with new props and waits until React has. */
  rerender: (props: P) => Promise<void>;
}

/** Renders `hook` in a component (React renders asynchronously here) and waits for it. */
async function render<T, P>(hook: (props: P) => T, props: P): Promise<View<T, P>> {
  let current: T | undefined;
  let renders = 0;
  const Probe = (p: { props: P }) => {
    current = hook(p.props);
    renders += 1;
    return null;
  };
  renderer = create(createElement(Probe, { props }));
  await until(() => current, "the first render");
  return {
    latest: () => current!,
    rerender: async (next) => {
      const before = renders;
      renderer!.update(createElement(Probe, { props: next }));
      await until(() => (renders > before ? true : undefined), "the render");
    },
  };
}

const renderCredits = (accountId: string, options: UseCreditsOptions): Promise<View<UseCredits, UseCreditsOptions>> =>
  render((o: UseCreditsOptions) => useCredits(accountId, o), options);

describe("useCredits", () => {
  it("shows the live balances and keeps one stream while the page re-renders with new callbacks", async () => {
    const { base, requests } = await serve((req, res) => {
      openStream(res);
      res.write(frame("credits", 100));
      setTimeout(() => res.write(frame("credits", 90, 0, "e1")), 50);
    });
    const view = await renderCredits("u", { baseUrl: base, token: "t", onTokenExpired: async () => "t2" });
    for (let i = 0; i < 3; i += 1) {
      await view.rerender({ baseUrl: base, token: "t", onTokenExpired: async () => `t${i}` });
    }
    await until(() => (view.latest().balances.credits?.available === 90 ? true : undefined), "the change");
    expect(view.latest()).toMatchObject({ status: "open", loading: false, error: null });
    expect(requests).toHaveLength(1);
  });

  it("sends a new token prop at the next connection, and closes the stream on unmount", async () => {
    let open = 0;
    const { base, requests } = await serve((req, res) => {
      open += 1;
      res.on("close", () => (open -= 1));
      openStream(res);
      if (requests.length === 1) res.end(frame("credits", 5));
      else res.write(frame("credits", 4));
    });
    const view = await renderCredits("u", { baseUrl: base, token: "first" });
    await until(() => view.latest().balances.credits, "the first stream");
    await view.rerender({ baseUrl: base, token: "second" });
    await until(() => (view.latest().balances.credits?.available === 4 ? true : undefined), "the second stream");
    expect(requests.map((r) => r.headers.authorization)).toEqual(["Bearer first", "Bearer second"]);
    renderer!.unmount();
    renderer = null;
    await until(() => (open === 0 ? true : undefined), "the server to see the stream closed");
  });
});

describe("useBuyCredits", () => {
  const visited: string[] = [];
  const renderBuy = (base: string, credits: number): Promise<View<UseBuyCredits, number>> =>
    render(
      (n: number) => useBuyCredits("credits", n, { backendUrl: base, checkout: { navigate: (u) => visited.push(u) } }),
      credits,
    );

  it("shows the quote of the latest amount, never a slower answer for an older one", async () => {
    const { base } = await serve((req, res) => {
      const credits = Number(new URL(req.url!, "http://x").searchParams.get("credits"));
      // The first amount's answer comes last.
      setTimeout(() => json(res, 200, { credit_type: "credits", credits, amount: credits * 8 }), credits === 100 ? 300 : 10);
    });
    const view = await renderBuy(base, 100);
    expect(view.latest().loading).toBe(true);
    await view.rerender(200);
    await until(() => view.latest().quote ?? undefined, "a quote");
    await new Promise((r) => setTimeout(r, 400)); // past the older answer's arrival
    expect(view.latest()).toMatchObject({ loading: false, error: null, quote: { credits: 200, amount: 1600 } });
  });

  it("turns the backend's problem into error, and checkout goes to the session's URL", async () => {
    const { base } = await serve((req, res) => {
      if (req.method === "POST") return json(res, 201, { id: "cs_1", url: "https://checkout.stripe.com/c/pay/cs_1" });
      if (req.url!.includes("credits=9&") || req.url!.endsWith("credits=9")) return problem(res, 422, "below-minimum");
      json(res, 200, { credit_type: "credits", credits: 50, amount: 500 });
    });
    const view = await renderBuy(base, 9);
    await until(() => view.latest().error ?? undefined, "the error");
    expect(view.latest()).toMatchObject({ loading: false, quote: null });
    expect(view.latest().error!.message).toBe("below-minimum detail");
    await view.rerender(50);
    await until(() => view.latest().quote ?? undefined, "the quote");
    expect(view.latest().error).toBeNull();
    await view.latest().checkout();
    expect(visited).toEqual(["https://checkout.stripe.com/c/pay/cs_1"]);
    await until(() => (view.latest().checkingOut ? undefined : true), "checkout to finish");
  });
});
